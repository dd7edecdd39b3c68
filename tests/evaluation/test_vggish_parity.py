"""The Flax VGGish against the published definition (`vggish_reference`: the network in plain
TF ops, the front end in float64 numpy), with one shared set of weights.

The weights are random, not the released ones (a user download), but they are a real TF
checkpoint under the release's slim names and shapes, and the port reads them through its own
loader while the reference reads them by name, so a mis-mapped layer, transposed kernel or
wrong flatten order shows up. They are He-scaled so activations stay O(1) through all layers.
The release's PCA + 8-bit quantisation (`vggish_postprocess`) has no counterpart here: the
project takes the raw float fc2 embedding, so there is nothing to compare.
"""
import numpy as np
import pytest
import tensorflow as tf

from musiclm_jax.evaluation import embedders, vggish
from tests.evaluation import vggish_reference as reference

# Measured: network 1.1e-6 of the output scale, front end 3.6e-6 in log-mel (float32 vs
# float64).
TOLERANCE = 1e-4


def _release_shapes() -> dict:
  shapes, fan_in = {}, 1
  for scope, features in zip(reference.CONV_SCOPES, (64, 128, 256, 256, 512, 512)):
    shapes[scope], fan_in = (3, 3, fan_in, features), features
  fan_in = 6 * 4 * 512   # 96 x 64 after four 2 x 2 pools
  for scope, units in zip(reference.FC_SCOPES, (4096, 4096, 128)):
    shapes[scope], fan_in = (fan_in, units), units
  return shapes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
  rng = np.random.default_rng(0)
  tensors = {}
  for scope, shape in _release_shapes().items():
    gain = 1.0 if scope == "fc2" else 2.0   # fc2 has no ReLU after it
    scale = np.float32(np.sqrt(gain / np.prod(shape[:-1])))
    tensors[f"vggish/{scope}/weights"] = rng.standard_normal(shape, np.float32) * scale
    tensors[f"vggish/{scope}/biases"] = rng.standard_normal(shape[-1:], np.float32) * 0.1
  path = str(tmp_path_factory.mktemp("vggish") / "vggish_model.ckpt")
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=path, tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=[tensors[name] for name in names])
  return path


@pytest.fixture(scope="module")
def embedder(checkpoint) -> vggish.VGGishEmbedder:
  return vggish.VGGishEmbedder.load(checkpoint)


def _test_clip(seconds=5.0) -> np.ndarray:
  """Three partials and noise, so every band has energy well above the log offset."""
  t = np.arange(int(seconds * vggish.SAMPLE_RATE)) / vggish.SAMPLE_RATE
  tones = sum(a * np.sin(2 * np.pi * f * t) for a, f in ((0.3, 220), (0.2, 1000), (0.1, 3500)))
  noise = 0.05 * np.random.default_rng(1).standard_normal(t.shape)
  return (tones + noise).astype(np.float32)


def _assert_close_at_scale(ours, theirs):
  scale = np.abs(theirs).max()
  assert scale > 1.0 and np.std(theirs) > 0.1   # not a dead (all-zero) or constant output
  # `pytest -s` shows the measured agreement (the numbers docs/evaluation.md quotes).
  print(f"embeddings: max |ours - release| {np.abs(ours - theirs).max():.2g}, "
        f"{np.abs(ours - theirs).max() / scale:.2g} of the output scale {scale:.3g}")
  np.testing.assert_allclose(ours / scale, theirs / scale, rtol=TOLERANCE, atol=TOLERANCE)


def test_network_matches_the_published_definition(embedder, checkpoint):
  examples = np.random.default_rng(2).normal(size=(4, 96, 64)).astype(np.float32)
  ours = np.asarray(embedder.network.apply({"params": embedder.params}, examples))
  theirs = reference.embeddings(examples, checkpoint)
  assert ours.shape == theirs.shape == (4, 128)
  assert not np.allclose(theirs[0], theirs[1])   # the input reaches the embedding
  _assert_close_at_scale(ours, theirs)


def test_front_end_matches_the_published_definition():
  np.testing.assert_allclose(vggish.mel_matrix(), reference.mel_matrix(257), atol=1e-6)
  wav = _test_clip()
  theirs = reference.examples(wav)
  # The release frames the whole clip; the port frames each window, so windows start one
  # example (96 hops) apart and overlap by the 240 samples of a frame's tail.
  starts = np.arange(0, wav.size - vggish.WINDOW_SAMPLES + 1, vggish.EXAMPLE_HOP_SAMPLES)
  windows = wav[starts[:, None] + np.arange(vggish.WINDOW_SAMPLES)]
  ours = np.asarray(vggish.log_mel_examples(windows))
  assert ours.shape == theirs.shape == (5, 96, 64)
  print(f"log-mel: max |ours - release| {np.abs(ours - theirs).max():.2g}; mel matrix "
        f"{np.abs(vggish.mel_matrix() - reference.mel_matrix(257)).max():.2g}")
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE)


def test_clip_embeddings_match_the_release(embedder, checkpoint):
  wav = _test_clip()
  ours = embedders.vggish_embedder(embedder).embed_clip(wav)
  theirs = reference.embeddings(reference.examples(wav).astype(np.float32), checkpoint)
  assert ours.shape == theirs.shape
  _assert_close_at_scale(ours, theirs)
