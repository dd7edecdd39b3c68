"""A small k-means in JAX to initialise RVQ codebooks from the first batch (jit-able).

Initialising codebooks from data rather than at random starts every code near some encoder
output, so few codes are dead from step 0 (SoundStream, Sec. 3.3, following VQ-VAE practice).
The full mini-batch k-means over a corpus (w2v-BERT's semantic tokens) is a different tool.
"""
import jax
import jax.numpy as jnp


def squared_distances(x, centroids):
  """`[n, dim]`, `[k, dim]` -> `[n, k]` squared Euclidean distances (one matmul)."""
  return (jnp.sum(jnp.square(x), -1, keepdims=True) - 2.0 * x @ centroids.T
          + jnp.sum(jnp.square(centroids), -1)[None, :])


def nearest(x, centroids):
  """`[n, dim]` -> int32 `[n]` index of the nearest centroid."""
  return jnp.argmin(squared_distances(x, centroids), axis=-1).astype(jnp.int32)


def kmeans(x, num_clusters: int, rng, num_iters: int = 10):
  """Lloyd's k-means on `x [n, dim]`.

  Starts from `num_clusters` distinct points (with repetition only when n < num_clusters).
  A cluster that loses all its points keeps its previous centroid rather than becoming NaN;
  the RVQ replaces it later as a dead code.

  Returns `(centroids [num_clusters, dim], counts [num_clusters])`, counts from the last
  assignment.
  """
  x = x.astype(jnp.float32)
  n = x.shape[0]
  start = jax.random.choice(rng, n, (num_clusters,), replace=n < num_clusters)
  centroids = x[start]

  def counts_and_sums(centroids):
    assign = nearest(x, centroids)
    counts = jax.ops.segment_sum(jnp.ones((n,), jnp.float32), assign, num_clusters)
    sums = jax.ops.segment_sum(x, assign, num_clusters)
    return counts, sums

  def step(_, centroids):
    counts, sums = counts_and_sums(centroids)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)

  centroids = jax.lax.fori_loop(0, num_iters, step, centroids)
  counts, _ = counts_and_sums(centroids)
  return centroids, counts
