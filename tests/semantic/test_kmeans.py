"""Mini-batch k-means, k-means++ seeding, normalisation statistics and the centroid file."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from musiclm_jax.semantic import kmeans

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _blobs(rng, num_clusters, dim, n, spread=10.0):
  centres = rng.normal(size=(num_clusters, dim)) * spread
  labels = rng.integers(0, num_clusters, n)
  return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels, centres


def _purity(ids, labels):
  """Fraction of points whose cluster's majority label is their own label."""
  return sum(np.bincount(labels[ids == c]).max() for c in np.unique(ids)) / len(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_well_separated_clusters(seed):
  rng = np.random.default_rng(seed)
  num_clusters, dim = 16, 8
  centres = rng.normal(size=(num_clusters, dim)) * 10

  def sample(n):
    labels = rng.integers(0, num_clusters, n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels

  clusterer = kmeans.MiniBatchKMeans(num_clusters)
  centroids, counts = clusterer.init(jax.random.key(seed), sample(256)[0])
  for _ in range(20):
    centroids, counts, inertia = clusterer.step(centroids, counts, sample(256)[0])
  points, labels = sample(4000)
  ids, _ = clusterer.assign(centroids, points)
  assert _purity(np.asarray(ids), labels) >= 0.95
  assert float(inertia) < 1.5 * dim  # unit-variance blobs: ~dim per point at the optimum
  assert int(np.sum(np.asarray(counts))) == 20 * 256


def test_kmeans_plus_plus_seeds_one_centroid_per_cluster():
  rng = np.random.default_rng(3)
  points, labels, centres = _blobs(rng, 8, 4, 400, spread=50.0)
  seeded = np.asarray(kmeans.kmeans_plus_plus(jax.random.key(0), points, 8))
  nearest_true = np.argmin(((seeded[:, None] - centres[None]) ** 2).sum(-1), axis=1)
  assert sorted(nearest_true) == list(range(8))
  # Seeds are data points.
  assert all(np.any(np.all(points == s, axis=1)) for s in seeded)


def test_kmeans_plus_plus_needs_enough_points():
  with pytest.raises(ValueError, match="at least 8 points"):
    kmeans.kmeans_plus_plus(jax.random.key(0), np.zeros((4, 2), np.float32), 8)


def test_minibatch_centroids_are_running_means_of_their_points():
  centroids = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
  counts = np.zeros(2, np.float32)
  a = np.array([[1.0, 0.0], [0.0, 1.0], [11.0, 10.0]], np.float32)
  b = np.array([[2.0, 2.0], [9.0, 9.0], [9.0, 11.0]], np.float32)
  c1, n1, _ = kmeans.minibatch_step(centroids, counts, a)
  c2, n2, _ = kmeans.minibatch_step(c1, n1, b)
  np.testing.assert_allclose(c2, [np.mean([a[0], a[1], b[0]], 0), np.mean([a[2], b[1], b[2]], 0)],
                             rtol=1e-6)
  np.testing.assert_array_equal(n2, [3, 3])


def test_statistics_over_batches_equal_numpy_over_everything():
  rng = np.random.default_rng(4)
  data = (rng.normal(size=(1000, 5)) * [1, 10, 0.1, 3, 1e3] + [5, -2, 0, 1e4, 7]).astype(np.float32)
  statistics = kmeans.FeatureStatistics()
  for chunk in np.array_split(data, [10, 300, 301, 999]):
    statistics.update(chunk)
  assert statistics.count == 1000
  np.testing.assert_allclose(statistics.mean, data.astype(np.float64).mean(0), rtol=1e-5)
  np.testing.assert_allclose(statistics.std, data.astype(np.float64).std(0), rtol=1e-4)
  normalised = np.asarray(kmeans.normalize(data, statistics.mean, statistics.std))
  np.testing.assert_allclose(normalised.mean(0), 0.0, atol=1e-3)
  np.testing.assert_allclose(normalised.std(0), 1.0, rtol=1e-3)


def test_constant_dimension_does_not_divide_by_zero():
  statistics = kmeans.FeatureStatistics()
  statistics.update(np.ones((10, 2), np.float32))
  assert np.all(np.isfinite(kmeans.normalize(np.ones((3, 2)), statistics.mean, statistics.std)))
  with pytest.raises(ValueError, match="no features"):
    _ = kmeans.FeatureStatistics().mean


def test_centroid_file_round_trips_with_its_normalisation(tmp_path):
  rng = np.random.default_rng(5)
  fitted = kmeans.SemanticKMeans(
      centroids=rng.normal(size=(16, 4)).astype(np.float32),
      mean=rng.normal(size=4).astype(np.float32),
      std=rng.uniform(0.5, 2, size=4).astype(np.float32),
      counts=rng.integers(0, 100, 16).astype(np.float32), layer=7)
  path = tmp_path / "sub" / "semantic_kmeans.npz"
  fitted.save(path)
  loaded = kmeans.SemanticKMeans.load(path)
  for name in ("centroids", "mean", "std", "counts"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(fitted, name))
  assert loaded.layer == 7 and loaded.num_clusters == 16
  assert os.listdir(path.parent) == ["semantic_kmeans.npz"]  # no temporary left behind
  features = rng.normal(size=(2, 5, 4)).astype(np.float32)
  np.testing.assert_array_equal(loaded.tokens(features), fitted.tokens(features))


def test_missing_or_foreign_centroid_file_is_named(tmp_path):
  missing = tmp_path / "nope" / "semantic_kmeans.npz"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    kmeans.SemanticKMeans.load(missing)
  foreign = tmp_path / "other.npz"
  np.savez(foreign, centroids=np.zeros((2, 2)))
  with pytest.raises(ValueError, match="other.npz is not a k-means centroid file"):
    kmeans.SemanticKMeans.load(foreign)
  with pytest.raises(ValueError, match="mean has shape"):
    kmeans.SemanticKMeans(np.zeros((4, 3)), np.zeros(2), np.ones(3), np.zeros(4), 1)


@pytest.fixture(scope="module")
def mesh_results(tmp_path_factory):
  out = tmp_path_factory.mktemp("kmeans_mesh")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-m", "tests.kmeans_mesh_worker", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  return {name: dict(np.load(out / f"{name}.npz")) for name in ("1dev", "8x1x1", "2x2x2")}


@pytest.mark.parametrize("mesh", ["8x1x1", "2x2x2"])
def test_sharded_kmeans_and_features_match_one_device(mesh_results, mesh):
  reference, sharded = mesh_results["1dev"], mesh_results[mesh]
  assert bool(sharded["points_sharded"])
  np.testing.assert_array_equal(sharded["seeded"], reference["seeded"])
  np.testing.assert_array_equal(sharded["ids"], reference["ids"])
  np.testing.assert_array_equal(sharded["counts"], reference["counts"])
  for name in ("centroids", "mean", "std", "features"):
    np.testing.assert_allclose(sharded[name], reference[name], rtol=1e-5, atol=1e-5)
  if mesh == "2x2x2":  # embed over fsdp, heads / mlp / vocab over model
    assert int(sharded["num_sharded_params"]) > 0
