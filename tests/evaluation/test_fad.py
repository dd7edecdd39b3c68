"""FAD and FAD∞ against closed forms and scipy's sqrtm; the embedder windowing and cache."""
import numpy as np
import pytest
import scipy.linalg

from musiclm_jax.evaluation import embedders, fad
from musiclm_jax.evaluation.embedding_cache import EmbeddingCache


def _scipy_frechet(a, b):
  """The textbook formula with a general matrix square root (the reference)."""
  root = scipy.linalg.sqrtm(a.cov @ b.cov)
  return float(np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov)
               - 2 * np.trace(np.real(root)))


def _stats(mean, cov, count=100):
  return fad.EmbeddingStats(np.asarray(mean, float), np.asarray(cov, float), count)


def test_distance_matches_scipy_sqrtm_on_random_covariances():
  rng = np.random.default_rng(0)
  for dim in (3, 16, 64):
    x = rng.normal(size=(4 * dim, dim))
    y = rng.normal(size=(4 * dim, dim)) @ rng.normal(size=(dim, dim)) + 0.5
    a, b = fad.EmbeddingStats.from_embeddings(x), fad.EmbeddingStats.from_embeddings(y)
    assert fad.frechet_distance(a, b) == pytest.approx(_scipy_frechet(a, b), rel=1e-8)


def test_closed_form_for_diagonal_covariances():
  # Commuting diagonals: |mu|^2 + sum (sqrt(s1) - sqrt(s2))^2.
  s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  expected = 1.0 + 4.0 + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
  got = fad.frechet_distance(_stats(mu1, np.diag(s1)), _stats(mu2, np.diag(s2)))
  assert got == pytest.approx(expected, rel=1e-12)


def test_scaled_covariance_closed_form():
  # Same mean, S and c^2 S: tr(S) (1 - c)^2.
  rng = np.random.default_rng(1)
  m = rng.normal(size=(5, 5))
  cov = m @ m.T
  got = fad.frechet_distance(_stats(np.zeros(5), cov), _stats(np.zeros(5), 9.0 * cov))
  assert got == pytest.approx(np.trace(cov) * 4.0, rel=1e-10)


def test_identical_sets_are_zero_and_shift_adds_squared_norm():
  x = np.random.default_rng(2).normal(size=(50, 8))
  assert fad.fad(x, x) == pytest.approx(0.0, abs=1e-9)
  shift = np.arange(8) * 0.1
  assert fad.fad(x, x + shift) == pytest.approx(np.sum(shift ** 2), rel=1e-8)


def test_singular_covariances_stay_real_and_finite():
  # Fewer embeddings than dimensions: rank-deficient covariances (where sqrtm struggles).
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(10, 64)), rng.normal(size=(12, 64))
  value = fad.fad(x, y)
  assert np.isfinite(value) and value > 0
  assert value == pytest.approx(_scipy_frechet(fad.EmbeddingStats.from_embeddings(x),
                                               fad.EmbeddingStats.from_embeddings(y)),
                                rel=1e-4)


def test_bad_inputs_name_the_side():
  with pytest.raises(ValueError, match="generated: a covariance needs at least 2"):
    fad.fad(np.zeros((5, 3)), np.zeros((1, 3)))
  with pytest.raises(ValueError, match="reference: FAD takes embeddings"):
    fad.fad(np.zeros(5), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="one dimension"):
    fad.fad(np.random.rand(5, 3), np.random.rand(5, 4))


def test_fad_infinity_recovers_the_population_distance():
  # Two Gaussians 0.5 apart per dim: true FAD = 8 * 0.25 = 2; finite-n FAD is biased upwards.
  rng = np.random.default_rng(4)
  dim = 8
  reference = rng.normal(size=(20000, dim))
  generated = rng.normal(size=(2000, dim)) + 0.5
  result = fad.fad_infinity(reference, generated, sizes=[100, 200, 400, 800, 1600, 2000])
  small = fad.fad(reference, generated[:100])
  assert small > result["fad_inf"]
  assert result["fad_inf"] == pytest.approx(2.0, abs=0.1)
  assert result["slope"] > 0
  with pytest.raises(ValueError, match="at least two subset sizes"):
    fad.fad_infinity(reference, generated, sizes=[100])


def _sum_embedder(calls):
  def embed(windows):
    calls.append(windows.shape[0])
    return np.stack([windows.sum(axis=1), windows.max(axis=1)], axis=1)
  return embedders.Embedder(name="sum", sample_rate=10, window_samples=4, hop_samples=2,
                            embed_fn=embed, max_batch=2)


def test_embedder_windows_drop_the_tail_and_pad_short_clips():
  embedder = _sum_embedder([])
  wav = np.arange(9, dtype=np.float32)
  np.testing.assert_array_equal(embedder.windows(wav)[:, 0], [0, 2, 4])
  assert embedder.embed_clip(wav).shape == (3, 2)
  np.testing.assert_array_equal(embedder.windows(np.ones(3)), [[1, 1, 1, 0]])
  with pytest.raises(ValueError, match="one mono clip"):
    embedder.windows(np.zeros((2, 8)))


def test_cache_computes_each_clip_once_and_notices_changed_audio(tmp_path):
  calls = []
  embedder = _sum_embedder(calls)
  cache = EmbeddingCache(tmp_path)
  wavs = [np.arange(8, dtype=np.float32), np.ones(6, np.float32)]
  first = embedders.embed_clips(embedder, wavs, cache, ids=["a/1", "b"])
  computed = sum(calls)
  second = embedders.embed_clips(embedder, wavs, EmbeddingCache(tmp_path), ids=["a/1", "b"])
  assert sum(calls) == computed  # nothing recomputed, even by a fresh cache object
  for x, y in zip(first, second):
    np.testing.assert_array_equal(x, y)
  changed = embedders.embed_clips(embedder, [wavs[0] * 2], cache, ids=["a/1"])
  assert sum(calls) > computed
  np.testing.assert_array_equal(changed[0][:, 0], first[0][:, 0] * 2)
