"""MuLan tokens: windowed audio embeddings, the fitted RVQ (round trip, file), audio and text to
tokens, and the MuLan cycle-consistency metric."""
import jax
import numpy as np
import pytest

from musiclm_jax.mulan import mulan_tokenizer
from musiclm_jax.evaluation import mulan_cycle
from tests import mulan_helpers

CAPTIONS = ["a calm piano melody", "loud drums and bass", "soft strings"]


def _clustered_unit_vectors(n, dim, clusters, seed=0):
  """Unit vectors around a few directions, like embeddings of a corpus of a few styles."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, dim))
  x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def quantizer():
  x = _clustered_unit_vectors(1024, 16, 32)
  return mulan_tokenizer.MuLanQuantizer.fit(x, num_levels=12, codebook_size=64,
                                         rng=jax.random.key(0)), x


@pytest.fixture(scope="module")
def embedder():
  model = mulan_helpers.tiny_model()
  return mulan_tokenizer.MuLanEmbedder(model, mulan_helpers.init_params(model))


def test_round_trip_cosine_rises_with_the_number_of_levels(quantizer):
  rvq, _ = quantizer
  x = _clustered_unit_vectors(256, 16, 32, seed=1)  # held out from the fit
  codes = rvq.tokens(x)
  assert codes.shape == (256, 12) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < 64
  cosines = []
  for n_q in range(1, 13):
    y = rvq.vectors(codes[:, :n_q])
    cosines.append(float(np.mean(np.sum(x * y, -1) / np.linalg.norm(y, axis=-1))))
  print("RVQ round-trip cosine by number of levels:", np.round(cosines, 4))
  assert all(b > a for a, b in zip(cosines, cosines[1:]))
  assert cosines[-1] > 0.9 and cosines[0] < cosines[-1] - 0.2
  # The first n_q codes alone are what quantizing with n_q levels gives.
  np.testing.assert_array_equal(rvq.tokens(x, n_q=3), codes[:, :3])


def test_quantizing_again_at_the_same_shape_compiles_nothing(quantizer):
  # Token caching quantizes one clip and one caption at a time: a compile per call (as the
  # eager RVQ scan did, 0.13 s each) was most of the cache step's time.
  rvq, x = quantizer
  compiles = []

  def listen(event, seconds, **_):
    del seconds
    if "backend_compile" in event:
      compiles.append(event)
  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    first = rvq.tokens(x[:1]), rvq.vectors(np.zeros((1, 12), np.int32))
    before = len(compiles)
    for row in x[1:4]:
      rvq.tokens(row[None])
      rvq.vectors(rvq.tokens(row[None]))
    assert len(compiles) == before, compiles[before:]
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  assert first[0].shape == (1, 12) and first[1].shape == (1, 16)


def test_quantizer_file_round_trip_and_errors(quantizer, tmp_path):
  rvq, x = quantizer
  path = tmp_path / "m" / mulan_tokenizer.RVQ_FILENAME
  rvq.save(path)
  loaded = mulan_tokenizer.MuLanQuantizer.load(path)
  np.testing.assert_array_equal(loaded.tokens(x[:8]), rvq.tokens(x[:8]))
  assert (loaded.num_levels, loaded.codebook_size) == (12, 64)
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing.npz")):
    mulan_tokenizer.MuLanQuantizer.load(tmp_path / "missing.npz")
  np.savez(tmp_path / "other.npz", centroids=np.zeros(3))
  with pytest.raises(ValueError, match="other.npz is not a MuLan quantizer"):
    mulan_tokenizer.MuLanQuantizer.load(tmp_path / "other.npz")
  with pytest.raises(ValueError, match=r"\[batch, 16\] embeddings"):
    rvq.tokens(np.zeros((2, 8)))


def test_window_starts():
  np.testing.assert_array_equal(mulan_tokenizer.window_starts(10, 10, 1), [0])
  np.testing.assert_array_equal(mulan_tokenizer.window_starts(4, 10, 1), [0])
  np.testing.assert_array_equal(mulan_tokenizer.window_starts(13, 10, 1), [0, 1, 2, 3])
  # 30 s at 16 kHz, paper windows: 10 s with 1 s hop -> 21 windows.
  assert len(mulan_tokenizer.window_starts(30 * 16000, 160000, 16000)) == 21


def test_long_clips_embed_as_the_renormalised_mean_of_their_windows(embedder):
  cfg = embedder.model.config
  rng = np.random.default_rng(0)
  wav = (rng.normal(size=(2, 2 * cfg.window_samples)) * 0.1).astype(np.float32)
  starts = mulan_tokenizer.window_starts(wav.shape[1], cfg.window_samples, cfg.hop_samples)
  assert len(starts) == 3  # 1 s windows, 0.5 s hop, over 2 s
  windows = [embedder.embed_audio(wav[:, s:s + cfg.window_samples]) for s in starts]
  mean = np.mean(windows, axis=0)
  expected = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
  np.testing.assert_allclose(embedder.embed_audio(wav), expected, rtol=1e-4, atol=1e-5)
  # A clip no longer than a window is embedded whole.
  short = wav[:, :cfg.window_samples // 2]
  np.testing.assert_allclose(embedder.embed_audio(short),
                             np.asarray(embedder.model.embed_audio(embedder.params, short)),
                             rtol=1e-5, atol=1e-6)


def test_audio_and_text_give_one_token_per_level(embedder):
  rng = np.random.default_rng(2)
  wav = (rng.normal(size=(3, 24000)) * 0.1).astype(np.float32)
  fitted_on = np.concatenate([embedder.embed_audio(wav), embedder.embed_text(CAPTIONS)])
  rvq = mulan_tokenizer.MuLanQuantizer.fit(fitted_on, 12, 4, jax.random.key(0))
  tokenizer = mulan_tokenizer.MuLanTokenizer(embedder, rvq)
  audio_tokens, text_tokens = tokenizer.audio_to_tokens(wav), tokenizer.text_to_tokens(CAPTIONS)
  assert audio_tokens.shape == text_tokens.shape == (3, 12)
  assert audio_tokens.dtype == np.int32 and 0 <= audio_tokens.min() <= audio_tokens.max() < 4
  with pytest.raises(ValueError, match="caption 0 is empty"):
    tokenizer.text_to_tokens([""])
  with pytest.raises(ValueError, match="add a batch axis"):
    tokenizer.audio_to_tokens(wav[0])
  with pytest.raises(ValueError, match=r"NaN/Inf samples in batch rows \[2\]"):
    tokenizer.audio_to_tokens(np.where(np.arange(3)[:, None] == 2, np.nan, wav))
  wrong_dim = mulan_tokenizer.MuLanQuantizer.fit(np.eye(8, dtype=np.float32), 2, 4,
                                              jax.random.key(0))
  with pytest.raises(ValueError, match="dimension 8 is not MuLan's embed_dim 16"):
    mulan_tokenizer.MuLanTokenizer(embedder, wrong_dim)


def test_from_model_dir_names_what_is_missing(quantizer, tmp_path):
  model = mulan_helpers.tiny_model()
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "mulan_rvq.npz")):
    mulan_tokenizer.MuLanTokenizer.from_model_dir(tmp_path, model)
  quantizer[0].save(mulan_tokenizer.rvq_path(tmp_path))
  with pytest.raises(FileNotFoundError, match=f"no MuLan checkpoints in {tmp_path}/checkpoints"):
    mulan_tokenizer.MuLanTokenizer.from_model_dir(tmp_path, model)


def test_cosine_similarity_is_row_wise_broadcasts_to_all_pairs_and_scores_zero_vectors_0():
  a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  b = np.array([[1.0, 1.0], [0.0, -1.0], [3.0, 4.0]])
  cosine = mulan_cycle.cosine_similarity(a, b)
  assert cosine.dtype == np.float32
  np.testing.assert_allclose(cosine, [2 ** -0.5, -1.0, 0.0], rtol=1e-6)
  pairs = mulan_cycle.cosine_similarity(a[:, None], b[None])  # [3, 3]: every a against every b
  np.testing.assert_allclose(np.diagonal(pairs), cosine)
  np.testing.assert_allclose(pairs[1], [2 ** -0.5, -1.0, 0.8], rtol=1e-6)


def test_cycle_consistency_is_the_mean_cosine_of_pairs(embedder):
  text = np.array([[1.0, 0.0], [0.0, 2.0]])
  audio = np.array([[1.0, 1.0], [0.0, -1.0]])
  np.testing.assert_allclose(mulan_cycle.cycle_consistency(text, audio), [2 ** -0.5, -1.0],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="all-zero"):
    mulan_cycle.cycle_consistency(np.zeros((1, 2)), np.ones((1, 2)))
  with pytest.raises(ValueError, match="one shape"):
    mulan_cycle.cycle_consistency(np.ones((2, 2)), np.ones((3, 2)))
  mcc = mulan_cycle.MuLanCycleConsistency(embedder)
  wav = np.random.default_rng(3).normal(size=(3, 16000)).astype(np.float32) * 0.1
  result = mcc(CAPTIONS, wav)
  expected = np.sum(embedder.embed_text(CAPTIONS) * embedder.embed_audio(wav), -1)
  np.testing.assert_allclose(result["per_example"], expected, rtol=1e-5, atol=1e-6)
  assert result["mcc"] == pytest.approx(float(expected.mean()), abs=1e-6)
  with pytest.raises(ValueError, match="one clip per caption"):
    mcc(CAPTIONS[:2], wav)
