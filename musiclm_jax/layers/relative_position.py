"""T5-style relative position bias: log-spaced distance buckets, one learned scalar per head."""
import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def relative_position_bucket(relative_position, *, bidirectional: bool, num_buckets: int,
                             max_distance: int):
  """Maps `key_position - query_position` to a bucket id in `[0, num_buckets)`.

  Half the buckets (all of them when unidirectional) cover exact small distances; the
  rest grow logarithmically up to `max_distance`, beyond which distances share a bucket.
  """
  bucket = 0
  n = -relative_position
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(n)
  else:
    n = jnp.maximum(n, 0)
  max_exact = num_buckets // 2
  is_small = n < max_exact
  # float32 log: the bucket boundaries must not depend on the compute dtype.
  log_ratio = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / np.log(
      max_distance / max_exact)
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, n, large)


class RelativePositionBiases(nn.Module):
  """Returns attention biases `[batch or 1, heads, q_len, k_len]` for given positions."""
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  bidirectional: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query_positions, key_positions):
    """query_positions `[b, q]`, key_positions `[b, k]` (b may be 1)."""
    relative = key_positions[:, None, :] - query_positions[:, :, None]
    buckets = relative_position_bucket(
        relative, bidirectional=self.bidirectional, num_buckets=self.num_buckets,
        max_distance=self.max_distance)
    table = self.param(
        "rel_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(0.1), ("heads", "relpos_buckets")),
        (self.num_heads, self.num_buckets),
        self.param_dtype,
    )
    bias = jnp.asarray(table, self.dtype)[:, buckets]  # [heads, b, q, k]
    return jnp.transpose(bias, (1, 0, 2, 3))


def offset_table(relpos: RelativePositionBiases) -> jnp.ndarray:
  """The bias of every key-minus-query offset in `[-max_distance, max_distance]`,
  `[heads, 2 * max_distance + 1]`: the buckets saturate at +-max_distance, so this table
  is the whole function, computed once per forward and shared by every layer."""
  offsets = jnp.arange(-relpos.max_distance, relpos.max_distance + 1)[None, :]
  return relpos(jnp.zeros((1, 1), jnp.int32), offsets)[0, :, 0, :]


def bias_from_table(table, query_positions, key_positions):
  """`[batch or 1, heads, q, k]` biases of positions `[b, q]`, `[b, k]` from `offset_table`."""
  max_distance = (table.shape[-1] - 1) // 2
  offsets = jnp.clip(key_positions[:, None, :] - query_positions[:, :, None],
                     -max_distance, max_distance) + max_distance
  return jnp.transpose(table[:, offsets], (1, 0, 2, 3))
