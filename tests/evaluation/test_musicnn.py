"""The Flax musicnn against the original TF1 graph and checkpoint, offline.

The reference is the graph the authors saved (`<model>/.meta`), not a re-build: musicnn's
`models.py` needs `tf.compat.v1.layers`, which Keras 3 removed. Its inference sub-graph is
cut out of the MetaGraphDef, the variables become constants from the checkpoint, and TF runs
it in graph mode (this test is the only place TF executes musicnn).
"""
import librosa
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from musiclm_jax.evaluation import musicnn, musicnn_weights
from musiclm_jax.data import music_synth

CLIPS = 3
SECONDS = 6.5   # two 3 s patches and a dropped tail


def _original_graph(model: str) -> tf.Graph:
  folder = f"{musicnn_weights.package_dir()}/{model}/"
  meta = meta_graph_pb2.MetaGraphDef()
  with open(folder + ".meta", "rb") as f:
    meta.ParseFromString(f.read())
  graph_def = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def, ["model/Sigmoid"])
  reader = tf.compat.v1.train.NewCheckpointReader(folder)
  frozen = tf.compat.v1.GraphDef()
  for node in graph_def.node:
    out = frozen.node.add()
    if node.op == "VariableV2":
      out.name, out.op = node.name, "Const"
      out.attr["dtype"].type = node.attr["dtype"].type
      out.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(reader.get_tensor(node.name)))
    else:
      out.CopyFrom(node)
      # Shapes recorded by TF 1.x disagree with today's FusedBatchNorm; TF re-infers them.
      del out.attr["_output_shapes"]
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(frozen, name="")
  return graph


def _original_tags(model: str, patches: np.ndarray) -> np.ndarray:
  with tf.compat.v1.Session(graph=_original_graph(model)) as session:
    return session.run("model/Sigmoid:0", {"model/Placeholder:0": patches,
                                           "model/Placeholder_2:0": False})


def _librosa_patches(wav: np.ndarray) -> np.ndarray:
  """musicnn's `batch_data` on a waveform (reflect padding: the librosa it was trained with),
  with the log taken in float32 after the float16 rounding, as `musicnn.log_mel` does."""
  mel = librosa.feature.melspectrogram(y=wav, sr=16000, hop_length=256, n_fft=512, n_mels=96,
                                       pad_mode="reflect").T
  mel = np.log10(10000 * mel.astype(np.float16).astype(np.float32) + 1)
  starts = range(0, mel.shape[0] - musicnn.PATCH_FRAMES + 1, musicnn.PATCH_FRAMES)
  return np.stack([mel[s:s + musicnn.PATCH_FRAMES] for s in starts]).astype(np.float32)


@pytest.fixture(scope="module")
def clips():
  return [music_synth.render_clip(i, seed=3, sample_rate=16000, seconds=SECONDS)[0]
          for i in range(CLIPS)]


@pytest.mark.parametrize("model", musicnn_weights.MODELS)
def test_flax_tags_match_the_original_graph_within_1e_4(model, clips):
  tagger = musicnn.MusicnnTagger.load(model)
  patches = np.concatenate([_librosa_patches(wav) for wav in clips])
  assert patches.shape == (2 * CLIPS, 187, 96)
  expected = _original_tags(model, patches)
  got = 1 / (1 + np.exp(-tagger.patch_outputs(patches)["logits"]))
  assert np.abs(got - expected).max() < 1e-4
  # Not a vacuous match: the clips are tagged differently.
  assert np.abs(expected[0] - expected[2]).max() > 1e-2


def test_jax_front_end_gives_the_original_pipeline_tags(clips):
  tagger = musicnn.MusicnnTagger.load("MTT_musicnn")
  for wav in clips:
    np.testing.assert_allclose(np.asarray(musicnn.log_mel(wav[None]))[0, :374],
                               _librosa_patches(wav).reshape(-1, 96), atol=2e-3)
    expected = _original_tags("MTT_musicnn", _librosa_patches(wav))
    assert np.abs(tagger.taggram(wav) - expected).max() < 1e-4


def test_window_outputs_have_the_documented_shapes(clips):
  tagger = musicnn.MusicnnTagger.load("MSD_musicnn")
  windows = np.stack([wav[:musicnn.WINDOW_SAMPLES] for wav in clips])
  outputs = tagger.outputs(windows)
  assert outputs["logits"].shape == (CLIPS, 50) and len(tagger.labels) == 50
  assert outputs["penultimate"].shape == (CLIPS, 200)
  assert outputs["mean_pool"].shape == outputs["max_pool"].shape == (CLIPS, 753)
  with pytest.raises(ValueError, match="windows"):
    tagger.outputs(np.zeros((1, 16000), np.float32))
  with pytest.raises(ValueError, match="at least 3 s"):
    tagger.taggram(np.zeros(16000, np.float32))


def test_loader_errors_name_the_problem(tmp_path):
  with pytest.raises(ValueError, match="must be one of"):
    musicnn_weights.load("MTT_big")
  with pytest.raises(FileNotFoundError, match="no musicnn checkpoint in"):
    musicnn_weights.load("MTT_musicnn", checkpoint_dir=str(tmp_path))
