"""Mini-batch k-means in JAX (Sculley 2010) with k-means++ seeding, sharded over the batch.

Semantic tokens are k-means ids of w2v-BERT features after each dimension is normalised to
zero mean / unit variance (AudioLM §III, MusicLM §3.1). This module holds the maths and the
centroid file; `fit_kmeans.py` streams features from a data set through it.

Sharding: points `[N, dim]` are split over the mesh's batch axes (`data`, `fsdp`); centroids
`[K, dim]` are replicated. Assignment is local to each device; the per-cluster sums are one
matmul over N, which XLA turns into an all-reduce. The results do not depend on the mesh.

Centroid file (.npz): `centroids [K, dim]`, `mean [dim]`, `std [dim]`, `counts [K]` (points
each centroid has absorbed), `layer` (the w2v-BERT MLM layer the features come from).
"""
import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from musiclm_jax.core import files

_MIN_STD = 1e-5  # a constant feature dimension must not divide by zero


# --- normalisation statistics ----------------------------------------------------------------

@jax.jit
def _batch_moments(points):
  points = points.astype(jnp.float32)
  mean = jnp.mean(points, axis=0)
  return mean, jnp.sum(jnp.square(points - mean), axis=0)


class FeatureStatistics:
  """Per-dimension mean and standard deviation over a stream of `[N, dim]` batches.

  Each batch is reduced on device (centred, so float32 keeps its precision); batches merge on
  the host in float64 with Chan et al.'s parallel update, exact for any number of batches.
  """

  def __init__(self):
    self.count = 0
    self._mean = None
    self._m2 = None

  def update(self, points) -> None:
    n = int(points.shape[0])
    if n == 0:
      return
    mean, m2 = (np.asarray(x, np.float64) for x in jax.device_get(_batch_moments(points)))
    if self._mean is None:
      self.count, self._mean, self._m2 = n, mean, m2
      return
    total = self.count + n
    delta = mean - self._mean
    self._mean = self._mean + delta * (n / total)
    self._m2 = self._m2 + m2 + np.square(delta) * (self.count * n / total)
    self.count = total

  @property
  def mean(self) -> np.ndarray:
    if self._mean is None:
      raise ValueError("no features were seen; cannot compute normalisation statistics")
    return self._mean.astype(np.float32)

  @property
  def std(self) -> np.ndarray:
    if self._mean is None:
      raise ValueError("no features were seen; cannot compute normalisation statistics")
    return np.maximum(np.sqrt(self._m2 / self.count), _MIN_STD).astype(np.float32)


def normalize(points, mean, std):
  """`[..., dim]` -> zero mean, unit variance per dimension."""
  return (points - mean) / std


# --- k-means ---------------------------------------------------------------------------------

def squared_distances(points, centroids):
  """`[N, dim] x [K, dim] -> [N, K]`, expanded so it is one matmul (clipped at 0: the
  expansion can round slightly negative)."""
  points = points.astype(jnp.float32)
  centroids = centroids.astype(jnp.float32)
  cross = points @ centroids.T
  d2 = (jnp.sum(jnp.square(points), axis=-1, keepdims=True) - 2.0 * cross
        + jnp.sum(jnp.square(centroids), axis=-1)[None, :])
  return jnp.maximum(d2, 0.0)


def assign(points, centroids):
  """Nearest centroid `[N]` int32 and its squared distance `[N]`."""
  d2 = squared_distances(points, centroids)
  ids = jnp.argmin(d2, axis=-1).astype(jnp.int32)
  return ids, jnp.take_along_axis(d2, ids[:, None], axis=-1)[:, 0]


def kmeans_plus_plus(rng, points, num_clusters: int, num_candidates: Optional[int] = None):
  """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's default): each next
  centroid is the best of `num_candidates` points drawn with probability proportional to their
  squared distance to the nearest centroid so far, "best" meaning the lowest total squared
  distance afterwards. Plain k-means++ (one candidate) often seeds two centroids in one
  cluster; the greedy trials make that rare. `[N, dim] -> [num_clusters, dim]`, N >= K."""
  num_points = points.shape[0]
  if num_points < num_clusters:
    raise ValueError(f"k-means++ needs at least {num_clusters} points, got {num_points}")
  if num_candidates is None:
    num_candidates = 2 + int(np.log(num_clusters))
  points = jnp.asarray(points, jnp.float32)
  first_rng, rest_rng = jax.random.split(rng)
  first = jax.random.randint(first_rng, (), 0, num_points)
  centroids = jnp.zeros((num_clusters, points.shape[1]), jnp.float32).at[0].set(points[first])
  nearest = squared_distances(points, centroids[:1])[:, 0]

  def add_one(i, carry):
    centroids, nearest = carry
    # Points already chosen have distance 0, hence log-weight -inf: never drawn twice.
    log_weights = jnp.where(nearest > 0, jnp.log(jnp.maximum(nearest, 1e-30)), -jnp.inf)
    picks = jax.random.categorical(jax.random.fold_in(rest_rng, i), log_weights,
                                   shape=(num_candidates,))
    candidates = jnp.minimum(nearest[:, None], squared_distances(points, points[picks]))
    best = jnp.argmin(jnp.sum(candidates, axis=0))
    centroids = centroids.at[i].set(points[picks[best]])
    return centroids, candidates[:, best]

  centroids, _ = jax.lax.fori_loop(1, num_clusters, add_one, (centroids, nearest))
  return centroids


def minibatch_step(centroids, counts, points):
  """One mini-batch update. Each centroid moves to the running mean of every point ever
  assigned to it: c <- c + (n_batch / n_total) (mean of its batch points - c), Sculley's
  per-centre learning rate 1 / count applied to the whole batch at once.

  Returns (centroids, counts, mean squared distance of the batch before the update).
  """
  ids, d2 = assign(points, centroids)
  one_hot = jax.nn.one_hot(ids, centroids.shape[0], dtype=jnp.float32)  # [N, K]
  batch_counts = jnp.sum(one_hot, axis=0)
  sums = one_hot.T @ points.astype(jnp.float32)
  new_counts = counts + batch_counts
  rate = batch_counts / jnp.maximum(new_counts, 1.0)
  batch_means = sums / jnp.maximum(batch_counts, 1.0)[:, None]
  centroids = centroids + rate[:, None] * (batch_means - centroids)
  return centroids, new_counts, jnp.mean(d2)


class MiniBatchKMeans:
  """Jitted k-means steps whose points are sharded over `mesh`'s batch axes.

  Without a mesh, everything runs on the default device. N must be divisible by the number
  of batch shards.
  """

  def __init__(self, num_clusters: int, mesh: Optional[jax.sharding.Mesh] = None):
    if num_clusters < 1:
      raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
    self.num_clusters = num_clusters
    self.mesh = mesh
    if mesh is None:
      self._init = jax.jit(kmeans_plus_plus, static_argnums=(2, 3))
      self._step = jax.jit(minibatch_step)
      self._assign = jax.jit(assign)
      return
    axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
    self.points_sharding = NamedSharding(mesh, PartitionSpec(axes, None))
    replicated = NamedSharding(mesh, PartitionSpec())
    self._init = jax.jit(kmeans_plus_plus, static_argnums=(2, 3),
                         in_shardings=(replicated, self.points_sharding),
                         out_shardings=replicated)
    self._step = jax.jit(minibatch_step,
                         in_shardings=(replicated, replicated, self.points_sharding),
                         out_shardings=(replicated, replicated, replicated))
    ids_sharding = NamedSharding(mesh, PartitionSpec(axes))
    self._assign = jax.jit(assign, in_shardings=(self.points_sharding, replicated),
                           out_shardings=(ids_sharding, ids_sharding))

  def place(self, points):
    """Host or device `[N, dim]` -> laid out for the steps."""
    if self.mesh is None:
      return jnp.asarray(points)
    return jax.device_put(points, self.points_sharding)

  def init(self, rng, points, num_inits: int = 3):
    """The best (lowest total squared distance) of `num_inits` k-means++ seedings from
    `points`; returns (centroids, zero counts).

    Mini-batch updates cannot move a centroid out of a cluster it shares with another, so a
    seeding that misses a cluster stays wrong; with greedy trials that still happens to about
    one seeding in five on well-separated data, hence several (scikit-learn's n_init).
    """
    points = self.place(points)
    best, best_potential = None, np.inf
    for rng_i in jax.random.split(rng, num_inits):
      centroids = self._init(rng_i, points, self.num_clusters)
      potential = float(jnp.sum(self.assign(centroids, points)[1]))
      if potential < best_potential:
        best, best_potential = centroids, potential
    return best, jnp.zeros((self.num_clusters,), jnp.float32)

  def step(self, centroids, counts, points):
    return self._step(centroids, counts, self.place(points))

  def assign(self, centroids, points):
    return self._assign(self.place(points), centroids)


def tokens(features, centroids, mean, std):
  """`[..., dim]` raw features -> `[...]` int32 ids of the nearest normalised centroid."""
  flat = normalize(features.reshape(-1, features.shape[-1]), mean, std)
  ids, _ = assign(flat, centroids)
  return ids.reshape(features.shape[:-1])


# --- the centroid file -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SemanticKMeans:
  """Centroids with the normalisation they were fitted under: `tokens(features)` gives ids."""
  centroids: np.ndarray  # [K, dim]
  mean: np.ndarray       # [dim]
  std: np.ndarray        # [dim]
  counts: np.ndarray     # [K]
  layer: int

  def __post_init__(self):
    k, dim = np.shape(self.centroids)
    for name, want in (("mean", (dim,)), ("std", (dim,)), ("counts", (k,))):
      if np.shape(getattr(self, name)) != want:
        raise ValueError(f"SemanticKMeans.{name} has shape {np.shape(getattr(self, name))}, "
                         f"expected {want} for centroids of shape {(k, dim)}")

  @property
  def num_clusters(self) -> int:
    return int(np.shape(self.centroids)[0])

  def tokens(self, features):
    """`[..., dim]` features -> `[...]` int32 ids (jit-able)."""
    return tokens(features, self.centroids, self.mean, self.std)

  def save(self, path) -> None:
    """Writes atomically (temporary file, then rename): a crash never leaves half a file."""
    files.save_npz(path, centroids=np.asarray(self.centroids, np.float32),
                   mean=np.asarray(self.mean, np.float32), std=np.asarray(self.std, np.float32),
                   counts=np.asarray(self.counts, np.float32), layer=np.int32(self.layer))

  @classmethod
  def load(cls, path) -> "SemanticKMeans":
    data = files.load_npz(path, ("centroids", "mean", "std", "counts", "layer"),
                          "k-means centroid file", "python -m musiclm_jax.fit_kmeans")
    return cls(centroids=data["centroids"], mean=data["mean"], std=data["std"],
               counts=data["counts"], layer=int(data["layer"]))
