"""Residual vector quantizer (SoundStream, Sec. 3.3 / Alg. 1), shared by SoundStream and MuLan.

Level q quantizes what levels 0..q-1 left over: `r_0 = x`, `c_q = nearest(codebook_q, r_q)`,
`r_{q+1} = r_q - codebook_q[c_q]`, and the quantized vector is the sum of the chosen entries.
Codebooks are not parameters: they follow an exponential moving average of the residuals
assigned to each entry (VQ-VAE-2 style, decay 0.99), start from k-means on the first batch,
and entries whose EMA count falls below a threshold are re-seeded with residuals from the
current batch (dead-code replacement). Quantizer dropout trains each example with a random
number of levels `n_q` in [1, num_levels], so one model serves every bitrate.

The codebook state is a dict, the "codebooks" variable collection of the Flax module:
  codebook      [levels, codebook_size, dim]   the entries used to quantize
  cluster_size  [levels, codebook_size]        EMA of assignments per step
  embed_sum     [levels, codebook_size, dim]   EMA of the sum of assigned residuals
  initialized   []                             1 once k-means has run
The pure functions below (`fit_state`, `quantize`, `codes_to_vectors`, `ema_update`,
`replace_dead_codes`) work on that dict directly; MuLan can use them without the module.
"""
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from musiclm_jax.layers.kmeans_init import kmeans, nearest

COLLECTION = "codebooks"
STATE_AXES = {
    "codebook": ("rvq_levels", "codebook_entries", "codebook_dim"),
    "cluster_size": ("rvq_levels", "codebook_entries"),
    "embed_sum": ("rvq_levels", "codebook_entries", "codebook_dim"),
    "initialized": (),
}


# --- pure functions on the codebook state -------------------------------------------------

def fit_state(x, num_levels: int, codebook_size: int, rng, num_iters: int = 10) -> dict:
  """Codebook state from data: k-means per level on the residual the previous levels leave.

  x: `[n, dim]` (e.g. a batch of encoder frames). The EMA counts start at this batch's
  cluster sizes, so they are on the scale later batches update them with.
  """
  def level(residual, key):
    centroids, counts = kmeans(residual, codebook_size, key, num_iters)
    return residual - centroids[nearest(residual, centroids)], (centroids, counts)

  _, (codebook, counts) = jax.lax.scan(level, x.astype(jnp.float32),
                                       jax.random.split(rng, num_levels))
  return {"codebook": codebook, "cluster_size": counts, "embed_sum": codebook * counts[..., None],
          "initialized": jnp.ones((), jnp.int32)}


def residual_quantize(codebook, x, level_mask=None):
  """The RVQ itself on flat vectors.

  codebook: `[levels, codebook_size, dim]`; x: `[n, dim]`; level_mask: `[levels, n]` (1 where
  level q is used for vector i; levels past an example's n_q leave its residual untouched).
  Returns `(quantized [n, dim], codes [levels, n], residuals [levels, n, dim])`: residuals[q]
  is the input level q quantized.
  """
  if level_mask is None:
    level_mask = jnp.ones((codebook.shape[0], x.shape[0]), x.dtype)

  def level(residual, inputs):
    entries, mask = inputs
    codes = nearest(residual, entries)
    return residual - entries[codes] * mask[:, None], (codes, residual)

  final, (codes, residuals) = jax.lax.scan(level, x, (codebook, level_mask.astype(x.dtype)))
  return x - final, codes, residuals


def quantize(state: dict, x, n_q: Optional[int] = None):
  """`x [..., dim]` with the first `n_q` levels (default all) -> `(quantized [..., dim],
  codes int32 [..., n_q], metrics)`. No gradients, no state update: inference."""
  codebook = state["codebook"][:n_q]
  flat = jax.lax.stop_gradient(x.reshape(-1, x.shape[-1]).astype(jnp.float32))
  quantized, codes, _ = residual_quantize(codebook, flat)
  mask = jnp.ones(codes.shape, jnp.float32)
  metrics = codebook_metrics(codes, mask, codebook.shape[1])
  return (quantized.reshape(x.shape).astype(x.dtype),
          codes.T.reshape(*x.shape[:-1], codebook.shape[0]), metrics)


def codes_to_vectors(state: dict, codes):
  """int `[..., n_q]` codes of the first n_q levels -> `[..., dim]` sum of their entries."""
  codebook = state["codebook"]
  n_q = codes.shape[-1]
  if n_q > codebook.shape[0]:
    raise ValueError(f"codes have {n_q} levels but the quantizer has {codebook.shape[0]}")
  picked = jax.vmap(lambda entries, c: entries[c], in_axes=(0, -1), out_axes=-2)(
      codebook[:n_q], codes)                                    # [..., n_q, dim]
  return jnp.sum(picked, axis=-2)


def ema_update(state: dict, residuals, codes, level_mask, decay: float, epsilon: float = 1e-5
               ) -> dict:
  """One EMA step of every level's entries towards the mean residual assigned to them.

  residuals `[levels, n, dim]`, codes / level_mask `[levels, n]`. A level no vector reached
  this step (quantizer dropout) keeps its state instead of decaying towards nothing.
  """
  size = state["cluster_size"].shape[-1]
  mask = level_mask.astype(jnp.float32)
  counts = jax.vmap(lambda c, m: jax.ops.segment_sum(m, c, size))(codes, mask)
  sums = jax.vmap(lambda r, c, m: jax.ops.segment_sum(r * m[:, None], c, size))(
      residuals, codes, mask)
  cluster_size = decay * state["cluster_size"] + (1.0 - decay) * counts
  embed_sum = decay * state["embed_sum"] + (1.0 - decay) * sums
  # Laplace smoothing: a near-empty entry divides by ~epsilon, not 0.
  total = jnp.sum(cluster_size, axis=-1, keepdims=True)
  smoothed = (cluster_size + epsilon) / (total + size * epsilon) * total
  codebook = embed_sum / smoothed[..., None]
  reached = jnp.any(mask > 0, axis=1)
  keep = lambda new, old: jnp.where(reached.reshape(-1, *[1] * (new.ndim - 1)), new, old)
  return dict(state, codebook=keep(codebook, state["codebook"]),
              cluster_size=keep(cluster_size, state["cluster_size"]),
              embed_sum=keep(embed_sum, state["embed_sum"]))


def replace_dead_codes(state: dict, residuals, level_mask, rng, threshold: float):
  """Re-seeds entries whose EMA count is below `threshold` with random residuals of this batch
  (from vectors that reached the level). Returns `(state, number replaced per level [levels])`.

  A re-seeded entry restarts at count `threshold`: it must win assignments within a step or
  two, or it is re-seeded again — unused codes keep moving to where the data is.
  """
  levels, size = state["cluster_size"].shape
  mask = level_mask > 0
  dead = (state["cluster_size"] < threshold) & jnp.any(mask, axis=1)[:, None]

  def sample(key, r, m):
    logits = jnp.where(m, 0.0, -1e9)
    return r[jax.random.categorical(key, logits, shape=(size,))]

  seeds = jax.vmap(sample)(jax.random.split(rng, levels), residuals, mask)  # [levels, size, dim]
  new = dict(state,
             codebook=jnp.where(dead[..., None], seeds, state["codebook"]),
             cluster_size=jnp.where(dead, threshold, state["cluster_size"]),
             embed_sum=jnp.where(dead[..., None], seeds * threshold, state["embed_sum"]))
  return new, jnp.sum(dead, axis=1)


def codebook_metrics(codes, level_mask, codebook_size: int) -> dict:
  """Per-level perplexity (exp entropy of code use, up to codebook_size) and usage (fraction
  of entries used) of codes `[levels, n]`, averaged over the levels that were reached."""
  mask = level_mask.astype(jnp.float32)
  counts = jax.vmap(lambda c, m: jax.ops.segment_sum(m, c, codebook_size))(codes, mask)
  total = jnp.sum(counts, axis=-1, keepdims=True)
  probs = counts / jnp.maximum(total, 1.0)
  perplexity = jnp.exp(-jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-10)), axis=-1))
  usage = jnp.mean(counts > 0, axis=-1)
  reached = (total[:, 0] > 0).astype(jnp.float32)
  mean = lambda v: jnp.sum(v * reached) / jnp.maximum(jnp.sum(reached), 1.0)
  metrics = {"perplexity": mean(perplexity), "usage": mean(usage)}
  metrics.update({f"perplexity_q{q}": perplexity[q] for q in range(codes.shape[0])})
  return metrics


# --- the Flax module ------------------------------------------------------------------------

class ResidualVectorQuantizer(nn.Module):
  """`[batch, frames, dim] -> (quantized [batch, frames, dim], codes [batch, frames, n_q], aux)`.

  In training (`train=True` with the "codebooks" collection mutable) it runs k-means on the
  first batch, samples n_q per example (quantizer dropout, rng stream "quantizer"), updates
  the codebooks by EMA and replaces dead codes. The quantized output passes gradients straight
  through to the encoder; `aux["commitment_loss"]` pulls the encoder towards its codes.
  """
  num_levels: int
  codebook_size: int
  dim: int
  decay: float = 0.99
  dead_code_threshold: float = 2.0
  kmeans_iters: int = 10
  quantizer_dropout_rate: float = 1.0
  epsilon: float = 1e-5

  def setup(self):
    shapes = {"codebook": (self.num_levels, self.codebook_size, self.dim),
              "cluster_size": (self.num_levels, self.codebook_size),
              "embed_sum": (self.num_levels, self.codebook_size, self.dim)}

    def initial(name):
      if name == "initialized":
        return jnp.zeros((), jnp.int32)
      if name == "codebook":
        # Random until k-means replaces it; lets an untrained model encode (benchmarks).
        return jax.random.normal(self.make_rng("params"), shapes[name], jnp.float32)
      return jnp.zeros(shapes[name], jnp.float32)

    self.state_vars = {
        name: self.variable(COLLECTION, name,
                            nn.with_logical_partitioning(lambda n=name: initial(n), axes))
        for name, axes in STATE_AXES.items()}

  def state(self) -> dict:
    return {name: var.value for name, var in self.state_vars.items()}

  def codes_to_vectors(self, codes):
    """int `[batch, frames, n_q]` -> `[batch, frames, dim]`."""
    return codes_to_vectors(self.state(), codes)

  def __call__(self, x, n_q: Optional[int] = None, *, train: bool = False):
    n_q = self.num_levels if n_q is None else n_q
    if not 1 <= n_q <= self.num_levels:
      raise ValueError(f"n_q={n_q} must be in [1, {self.num_levels}]")
    update = train and self.is_mutable_collection(COLLECTION) and not self.is_initializing()
    state = self.state()
    batch_shape = x.shape[:-1]
    flat = jax.lax.stop_gradient(x.reshape(-1, self.dim).astype(jnp.float32))
    if update:
      state = jax.lax.cond(
          state["initialized"] > 0, lambda s: s,
          lambda s: fit_state(flat, self.num_levels, self.codebook_size,
                              self.make_rng("quantizer"), self.kmeans_iters), state)

    example_levels = jnp.full(batch_shape[:1], n_q, jnp.int32)            # [batch]
    if train and self.quantizer_dropout_rate > 0:
      key_n, key_drop = jax.random.split(self.make_rng("quantizer"))
      sampled = jax.random.randint(key_n, batch_shape[:1], 1, n_q + 1)
      dropped = jax.random.bernoulli(key_drop, self.quantizer_dropout_rate, batch_shape[:1])
      example_levels = jnp.where(dropped, sampled, n_q)
    mask = jnp.arange(self.num_levels)[:, None] < example_levels[None, :]  # [levels, batch]
    per_frame = jnp.broadcast_to(mask[:, :, None], (self.num_levels, *batch_shape))
    level_mask = per_frame.reshape(self.num_levels, -1)

    quantized, codes, residuals = residual_quantize(state["codebook"], flat, level_mask)
    metrics = codebook_metrics(codes, level_mask, self.codebook_size)
    if update:
      rng = self.make_rng("quantizer")
      state = ema_update(state, residuals, codes, level_mask, self.decay, self.epsilon)
      state, replaced = replace_dead_codes(state, residuals, level_mask, rng,
                                           self.dead_code_threshold)
      for name, var in self.state_vars.items():
        var.value = state[name]
      metrics["replaced_codes"] = jnp.sum(replaced).astype(jnp.float32)

    quantized = quantized.reshape(x.shape).astype(x.dtype)
    # Codebooks are EMA state, not parameters, so the only thing this pulls is the encoder:
    # towards the sum of its codes (levels past an example's n_q are simply not in that sum).
    commitment_loss = jnp.mean(jnp.square(x - jax.lax.stop_gradient(quantized)))
    straight_through = nn.with_logical_constraint(
        x + jax.lax.stop_gradient(quantized - x),
        ("activation_batch", "activation_length", "activation_embed"))
    codes = codes.T.reshape(*batch_shape, self.num_levels)[..., :n_q]
    metrics["mean_levels"] = jnp.mean(example_levels.astype(jnp.float32))
    return straight_through, codes, {"commitment_loss": commitment_loss, "metrics": metrics,
                                     "example_levels": example_levels}
