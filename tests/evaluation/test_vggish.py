"""VGGish: shapes of the released configuration, the front end, and the checkpoint loader on
weights this test writes itself (the released ones are a user download)."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from musiclm_jax.evaluation import vggish, vggish_weights
from musiclm_jax.evaluation import embedders

TINY = vggish.VGGish(conv_features=(4, 4, 6, 6, 8, 8), fc_units=(16, 12), embedding_size=5)


def _tf_name(layer: str, leaf: str) -> str:
  scope = {"conv3_1": "conv3/conv3_1", "conv3_2": "conv3/conv3_2", "conv4_1": "conv4/conv4_1",
           "conv4_2": "conv4/conv4_2", "fc1_1": "fc1/fc1_1", "fc1_2": "fc1/fc1_2"}.get(layer, layer)
  return f"vggish/{scope}/{'weights' if leaf == 'kernel' else 'biases'}"


def _write_tf1_checkpoint(path, tensors: dict) -> None:
  """A TF1 Saver checkpoint with slim's variable names, like the released file."""
  graph = tf.Graph()
  with graph.as_default():
    variables = [tf.compat.v1.Variable(value, name=name) for name, value in tensors.items()]
    variables.append(tf.compat.v1.Variable(7, name="global_step", dtype=tf.int64))
    saver = tf.compat.v1.train.Saver(variables)
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      saver.save(session, path, write_meta_graph=False)


def _random_params(network, seed=0):
  return jax.tree.map(np.asarray, network.init(jax.random.key(seed),
                                               np.zeros((1, 96, 64), np.float32))["params"])


def test_released_configuration_has_the_published_size_and_shapes():
  shapes = jax.eval_shape(lambda: vggish.VGGish().init(
      jax.random.key(0), np.zeros((1, 96, 64), np.float32)))["params"]
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert count == 72_141_184   # 12288 x 4096 dominates: the released VGGish's 72.1M
  assert shapes["fc1_1"]["kernel"].shape == (6 * 4 * 512, 4096)
  examples = vggish.log_mel_examples(np.zeros((3, vggish.WINDOW_SAMPLES), np.float32))
  assert examples.shape == (3, 96, 64)


def test_front_end_puts_a_tone_in_its_band_and_frames_like_the_release():
  weights = vggish.mel_matrix()
  assert weights.shape == (257, 64) and not weights[0].any()
  t = np.arange(vggish.WINDOW_SAMPLES) / 16000
  examples = np.asarray(vggish.log_mel_examples(np.sin(2 * np.pi * 1000 * t)[None]))
  centers = np.linspace(vggish.htk_mel(125.0), vggish.htk_mel(7500.0), 66)[1:-1]
  assert examples[0].mean(axis=0).argmax() == np.abs(centers - vggish.htk_mel(1000.0)).argmin()
  # A 2 s clip has 198 frames -> 2 examples of 96; the embedder's windows agree.
  embedder = embedders.Embedder("v", 16000, vggish.WINDOW_SAMPLES, vggish.EXAMPLE_HOP_SAMPLES,
                                embed_fn=lambda w: w[:, :1])
  assert embedder.windows(np.zeros(32000)).shape == (2, vggish.WINDOW_SAMPLES)


def test_loader_maps_slim_names_onto_the_flax_parameters(tmp_path):
  params = _random_params(TINY)
  tensors = {_tf_name(layer, leaf): value for layer, leaves in params.items()
             for leaf, value in leaves.items()}
  path = str(tmp_path / "vggish_model.ckpt")
  _write_tf1_checkpoint(path, tensors)
  embedder = vggish.VGGishEmbedder.load(path, TINY)
  jax.tree.map(np.testing.assert_array_equal, embedder.params, params)
  windows = np.random.default_rng(0).normal(size=(3, vggish.WINDOW_SAMPLES)).astype(np.float32)
  expected = TINY.apply({"params": params}, vggish.log_mel_examples(windows))
  np.testing.assert_allclose(embedder.embed(windows), expected, rtol=1e-5, atol=1e-6)
  assert embedders.vggish_embedder(embedder).embed_clip(windows[0]).shape == (1, 5)


def test_loader_errors_name_the_file_and_the_layer(tmp_path):
  with pytest.raises(FileNotFoundError, match="VGGish checkpoint not found"):
    vggish_weights.load(str(tmp_path / "absent.ckpt"), TINY)
  params = _random_params(TINY)
  params["fc2"]["kernel"] = np.zeros((12, 7), np.float32)
  path = str(tmp_path / "wrong.ckpt")
  _write_tf1_checkpoint(path, {_tf_name(layer, leaf): value for layer, leaves in params.items()
                               for leaf, value in leaves.items()})
  with pytest.raises(ValueError, match=r"wrong.ckpt does not fit this VGGish: fc2/kernel"):
    vggish_weights.load(path, TINY)
  with open(tmp_path / "junk.ckpt", "wb") as f:
    f.write(b"not a checkpoint")
  with pytest.raises(ValueError, match="junk.ckpt is not a readable TF checkpoint"):
    vggish_weights.load(str(tmp_path / "junk.ckpt"), TINY)
