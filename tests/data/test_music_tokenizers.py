"""The frozen tokenizer bundle: one clip at any rate -> MuLan, semantic and acoustic codes on the
token layout's frame grid; checkpoints named by a fingerprint; bad input named.

`write_tiny_tokenizers` (random-init tiny checkpoints, as musiclm_jax/gin/tasks/synthetic_music_tokens.gin
builds the models) is shared with the tokenizing-task and cache tests and bench/pretokenize.py.
"""
import os

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.core import audio, checkpoints, gin_utils
from musiclm_jax.semantic import kmeans
from musiclm_jax.mulan import mulan_tokenizer
from musiclm_jax.data import music_tokenizers
from musiclm_jax.semantic import semantic_tokenizer
from musiclm_jax.stages import token_layout
from musiclm_jax.layers import rvq
from musiclm_jax.data.music_tokenizers import MusicTokenizers, TokenizerCheckpoints
from musiclm_jax.codec.soundstream import SoundStreamCodec
from musiclm_jax.core.train_state import TrainState
from tests import mulan_helpers, w2v_bert_helpers

TOKENS_GIN = "tasks/synthetic_music_tokens.gin"
# The tiny MuLan with a from-scratch 2-layer text tower: MiniLM's weights would make every
# checkpoint 90 MB, and tokenizing audio never reads the text tower.
TINY_TEXT_TOWER = [
    "MuLanConfig.text_tower = @bert.BertConfig()",
    "bert.BertConfig.emb_dim = 32", "bert.BertConfig.num_heads = 2",
    "bert.BertConfig.head_dim = 16", "bert.BertConfig.mlp_dim = 64",
    "bert.BertConfig.num_layers = 2", "bert.BertConfig.max_positions = 64",
    "mulan.MuLanModel.pretrained_text_tower = False",
    "mulan.MuLanModel.freeze_text_tower = False",
]
RATE = 16000


def tiny_tokenizer_bindings(root) -> list[str]:
  """Gin bindings (after TOKENS_GIN) for the tiny tokenizers under `root`."""
  return [*TINY_TEXT_TOWER, f"SOUNDSTREAM_DIR = '{root}/soundstream'",
          f"W2V_BERT_DIR = '{root}/w2v_bert'", f"MULAN_DIR = '{root}/mulan'"]


def parse_tiny_tokenizers_gin(root) -> None:
  gin.clear_config()
  gin_utils.parse_gin([TOKENS_GIN], tiny_tokenizer_bindings(root))


def _save(model_dir, params, model_state=None, step=1):
  manager = checkpoints.create_manager(os.path.join(model_dir, "checkpoints"))
  checkpoints.save(manager, step, TrainState.create(params, optax.sgd(0.1).init(params),
                                                    model_state))
  manager.wait_until_finished()
  manager.close()


def write_tiny_tokenizers(root, seed: int = 0) -> TokenizerCheckpoints:
  """Random-init checkpoints of the tiny tokenizers under root/{soundstream,w2v_bert,mulan},
  with a k-means and a MuLan RVQ; the models are those gin binds (parse_tiny_tokenizers_gin)."""
  root = os.fspath(root)
  models = music_tokenizers.TokenizerModels()
  layout = models.layout
  rng = np.random.default_rng(seed)

  codec_vars = jax.jit(lambda k: nn.meta.unbox(SoundStreamCodec(models.soundstream_config).init(
      k, jnp.zeros((1, layout.acoustic_hop)))))(jax.random.key(seed, impl="rbg"))
  codec_vars = jax.tree.map(np.asarray, codec_vars)
  # Fresh codebooks are all zeros (filled by k-means on the first batch): random entries make
  # the codes depend on the audio.
  codebooks = codec_vars[rvq.COLLECTION]
  quantizer = codebooks["quantizer"]
  quantizer["codebook"] = rng.normal(size=quantizer["codebook"].shape).astype(np.float32)
  _save(f"{root}/soundstream", {"generator": codec_vars["params"]}, {rvq.COLLECTION: codebooks})

  w2v_params = w2v_bert_helpers.init_params(models.w2v_bert_model, seed)
  _save(f"{root}/w2v_bert", w2v_params)
  width = models.w2v_bert_model.config.emb_dim
  kmeans.SemanticKMeans(
      centroids=rng.normal(size=(layout.semantic_codebook_size, width)).astype(np.float32),
      mean=np.zeros(width, np.float32), std=np.ones(width, np.float32),
      counts=np.ones(layout.semantic_codebook_size, np.float32), layer=1,
  ).save(semantic_tokenizer.centroids_path(f"{root}/w2v_bert"))

  _save(f"{root}/mulan", mulan_helpers.init_params(models.mulan_model, seed))
  dim = models.mulan_model.config.embed_dim
  embeddings = rng.normal(size=(4 * layout.mulan_codebook_size, dim)).astype(np.float32)
  embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
  mulan_tokenizer.MuLanQuantizer.fit(embeddings, layout.mulan_levels, layout.mulan_codebook_size,
                                  jax.random.key(seed), kmeans_iters=3).save(
                                      mulan_tokenizer.rvq_path(f"{root}/mulan"))
  return TokenizerCheckpoints(f"{root}/soundstream", f"{root}/w2v_bert", f"{root}/mulan")


def music(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
  """A few seconds of chords with noise, float32 [samples]."""
  t = np.arange(int(round(seconds * rate))) / rate
  rng = np.random.default_rng(seed)
  hz = 110.0 * 2.0 ** (rng.integers(0, 24, size=3) / 12.0)
  wav = sum(np.sin(2 * np.pi * f * t) for f in hz) / 6 + 0.01 * rng.normal(size=t.shape)
  return wav.astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(checkpoints, models, tokenizers) of random-init tiny tokenizers."""
  root = tmp_path_factory.mktemp("tokenizers")
  parse_tiny_tokenizers_gin(root)
  try:
    ckpts = write_tiny_tokenizers(root)
    models = music_tokenizers.TokenizerModels()
    yield ckpts, models, music_tokenizers.load_music_tokenizers()
  finally:
    gin.clear_config()


def test_streams_have_the_layout_frame_counts_for_any_rate_and_length(tiny):
  _, _, tokenizers = tiny
  layout = tokenizers.layout
  for seconds, rate in ((4.0, 16000), (2.03, 44100), (1.0, 24000)):
    streams = tokenizers.tokenize(music(seconds, rate), rate)
    span = int(seconds * 25) / 25   # whole 40 ms steps
    assert streams["mulan"].shape == (layout.mulan_levels,)
    assert streams["semantic"].shape == (layout.frames("semantic", span),)
    assert streams["acoustic"].shape == (layout.frames("acoustic", span), layout.acoustic_levels)
    for name, codes in streams.items():
      assert codes.dtype == np.int32 and codes.min() >= 0
      assert codes.max() < layout.codebook_size(name), name


def test_streams_are_what_each_tokenizer_gives_for_its_input(tiny):
  _, _, tokenizers = tiny
  wav = music(2.0, seed=3)
  streams = tokenizers.tokenize(wav, RATE)
  level = audio.loudness_normalize(wav, music_tokenizers.TARGET_DBFS)
  np.testing.assert_array_equal(streams["semantic"], tokenizers.semantic.tokenize(level[None])[0])
  np.testing.assert_array_equal(streams["acoustic"], np.asarray(tokenizers.codec.encode(level[None]))[0])
  np.testing.assert_array_equal(streams["mulan"], tokenizers.mulan.audio_to_tokens(wav[None])[0])
  # The random codebooks make the codes follow the audio (a constant stream would hide bugs).
  assert len(np.unique(streams["acoustic"][:, 0])) > 1
  assert len(np.unique(streams["semantic"])) > 1


def test_stereo_is_down_mixed_and_other_rates_are_resampled(tiny):
  _, _, tokenizers = tiny
  left, right = music(1.0, seed=1), music(1.0, seed=2)
  stereo = tokenizers.tokenize(np.stack([left, right]), RATE)
  mono = tokenizers.tokenize((left + right) / 2, RATE)
  for name in mono:
    np.testing.assert_array_equal(stereo[name], mono[name])
  import librosa  # pylint: disable=import-outside-toplevel
  at_48k = librosa.resample(left, orig_sr=RATE, target_sr=48000, res_type="soxr_hq")
  resampled = tokenizers.tokenize(at_48k, 48000)
  assert {k: v.shape for k, v in resampled.items()} == {
      k: v.shape for k, v in tokenizers.tokenize(left, RATE).items()}


@pytest.mark.parametrize("wav, rate, message", [
    (np.zeros(0, np.float32), RATE, "empty clip"),
    (np.full(16000, np.nan, np.float32), RATE, "16000 NaN/Inf samples"),
    (np.zeros(100, np.float32), RATE, "shorter than one 40 ms frame step"),
    (np.zeros((16000, 2), np.float32), RATE, r"got shape \(16000, 2\)"),
    (np.zeros(16000, np.int16), RATE, "dtype int16"),
    (np.zeros(16000, np.float32), 0, "sample_rate must be a positive int"),
])
def test_bad_input_is_named(tiny, wav, rate, message):
  with pytest.raises(ValueError, match=message):
    tiny[2].tokenize(wav, rate)


def test_silence_tokenizes_without_nan(tiny):
  streams = tiny[2].tokenize(np.zeros(16000, np.float32), RATE)
  assert streams["semantic"].shape == (25,) and streams["acoustic"].shape == (50, 4)


def test_fingerprint_names_dirs_steps_and_files_and_changes_with_them(tiny, tmp_path):
  ckpts, _, tokenizers = tiny
  fingerprint = ckpts.fingerprint()
  assert fingerprint == tokenizers.fingerprint
  assert f"soundstream={ckpts.soundstream_dir}@1" in fingerprint
  assert f"mulan={ckpts.mulan_dir}@1" in fingerprint
  other = tmp_path / "semantic_kmeans.npz"
  centroids = kmeans.SemanticKMeans.load(semantic_tokenizer.centroids_path(ckpts.w2v_bert_dir))
  centroids.centroids[0] += 1.0
  centroids.save(other)
  assert TokenizerCheckpoints(ckpts.soundstream_dir, ckpts.w2v_bert_dir, ckpts.mulan_dir,
                              kmeans_file=str(other)).fingerprint() != fingerprint


def test_missing_checkpoints_and_a_layout_mismatch_are_named(tiny, tmp_path):
  ckpts, _, tokenizers = tiny
  with pytest.raises(ValueError, match="needs mulan_dir"):
    TokenizerCheckpoints(ckpts.soundstream_dir, ckpts.w2v_bert_dir, mulan_dir=None).fingerprint()
  with pytest.raises(FileNotFoundError, match="no SoundStream checkpoint step 7"):
    TokenizerCheckpoints(ckpts.soundstream_dir, ckpts.w2v_bert_dir, ckpts.mulan_dir,
                         soundstream_step=7).resolved()
  with pytest.raises(FileNotFoundError, match=f"no MuLan checkpoints in {tmp_path}"):
    TokenizerCheckpoints(ckpts.soundstream_dir, ckpts.w2v_bert_dir, str(tmp_path)).resolved()
  with pytest.raises(ValueError, match="do not fit the token layout: the codec's layout"):
    MusicTokenizers(tokenizers.codec, tokenizers.semantic, tokenizers.mulan, token_layout.PAPER)
