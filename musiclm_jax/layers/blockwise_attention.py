"""Attention that never holds a `[batch, heads, T, T]` array: keys in blocks, online softmax.

The memory-efficient attention of Rabe & Staats (2021), the same arithmetic as flash attention
written in plain JAX: for each block of queries, a scan over blocks of keys keeps the running
row maximum, normaliser and weighted sum of values. The key loop's body is rematerialised,
so the backward pass keeps only its carries (per query block, one [batch, heads, block,
head_dim] accumulator per key block) and recomputes the scores once, as flash attention does.

What a reference layer gets as a materialised mask and bias comes in here as per-token vectors
(`TokenMask`) and T5's relative position bias as its table over key-minus-query offsets
(`relative_position.offset_table`), so no T x T mask or bias exists either.
"""
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

NEG_INF = -1e10  # as the reference layer: a fully masked row averages the values, not NaN


class TokenMask(NamedTuple):
  """Which (query, key) pairs may attend, from per-token facts (t5x's decoder mask): key not
  after query, or both in the bidirectional prefix; neither is padding; same packed segment."""
  valid: jax.Array                          # bool [batch, length]
  prefix: Optional[jax.Array] = None        # bool [batch, length]
  segment_ids: Optional[jax.Array] = None   # int [batch, length]

  @classmethod
  def from_features(cls, decoder_target_tokens, decoder_causal_attention=None,
                    decoder_segment_ids=None) -> "TokenMask":
    prefix = None if decoder_causal_attention is None else decoder_causal_attention.astype(bool)
    return cls(decoder_target_tokens > 0, prefix, decoder_segment_ids)

  def dense(self) -> jax.Array:
    """The same mask materialised, bool `[batch, 1, length, length]` (for the reference path)."""
    length = self.valid.shape[-1]
    positions = jnp.arange(length)
    mask = positions[None, :, None] >= positions[None, None, :]
    if self.prefix is not None:
      mask = mask | (self.prefix[:, :, None] & self.prefix[:, None, :])
    mask = mask & self.valid[:, :, None] & self.valid[:, None, :]
    if self.segment_ids is not None:
      mask = mask & (self.segment_ids[:, :, None] == self.segment_ids[:, None, :])
    return mask[:, None, :, :]


def _blocks(x, num_blocks: int, block: int):
  """`[batch, num_blocks * block, ...]` -> `[num_blocks, batch, block, ...]`."""
  x = x.reshape(x.shape[0], num_blocks, block, *x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _pad(x, length: int, value=0):
  pad = [(0, 0)] * x.ndim
  pad[1] = (0, length - x.shape[1])
  return jnp.pad(x, pad, constant_values=value)


def blockwise_attention(query, key, value, relative_bias, token_mask: TokenMask, *,
                        block_size: int = 512, dropout_rate: float = 0.0,
                        dropout_rng: Optional[jax.Array] = None,
                        dtype=jnp.float32) -> jax.Array:
  """`[batch, length, heads, head_dim]` attention output.

  query (already scaled by 1/sqrt(head_dim)), key, value: `[batch, length, heads, head_dim]`.
  relative_bias: `[heads, 2 * M + 1]`, the bias of key offset `k - q` at index
  `clip(k - q, -M, M) + M` (relative_position.offset_table). Scores are summed in float32;
  matmuls run in `dtype`.
  Dropout (with `dropout_rng`) drops normalised weights, as the reference layer does.
  """
  batch, length, heads, head_dim = query.shape
  block = min(block_size, length)
  num_blocks = -(-length // block)
  padded = num_blocks * block
  positions = jnp.arange(padded)
  valid = _pad(token_mask.valid.astype(bool), padded, False)
  prefix = (None if token_mask.prefix is None
            else _pad(token_mask.prefix.astype(bool), padded, False))
  segments = None if token_mask.segment_ids is None else _pad(token_mask.segment_ids, padded)

  def split(x):
    return None if x is None else _blocks(_pad(x, padded), num_blocks, block)

  q_blocks, k_blocks, v_blocks = split(query), split(key), split(value)
  valid_b, prefix_b, segment_b = split(valid), split(prefix), split(segments)
  pos_b = positions.reshape(num_blocks, block)
  relative_bias = relative_bias.astype(jnp.float32)
  max_offset = (relative_bias.shape[-1] - 1) // 2
  use_dropout = dropout_rate > 0.0 and dropout_rng is not None

  def per_query_block(q_args):
    qi, q, q_valid, q_prefix, q_segment, q_pos = q_args

    def per_key_block(carry, k_args):
      row_max, normaliser, acc = carry
      ki, k, v, k_valid, k_prefix, k_segment, k_pos = k_args
      scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(dtype), k.astype(dtype))
      offset = jnp.clip(k_pos[None, :] - q_pos[:, None], -max_offset, max_offset) + max_offset
      scores = scores.astype(jnp.float32) + relative_bias[:, offset][None]
      allowed = (k_pos[None, :] <= q_pos[:, None])[None]
      if q_prefix is not None:
        allowed = allowed | (q_prefix[:, :, None] & k_prefix[:, None, :])
      allowed = allowed & q_valid[:, :, None] & k_valid[:, None, :]
      if q_segment is not None:
        allowed = allowed & (q_segment[:, :, None] == k_segment[:, None, :])
      scores = jnp.where(allowed[:, None], scores, NEG_INF)
      new_max = jnp.maximum(row_max, scores.max(axis=-1))
      weights = jnp.exp(scores - new_max[..., None])
      correction = jnp.exp(row_max - new_max)
      normaliser = normaliser * correction + weights.sum(axis=-1)
      if use_dropout:
        rng = jax.random.fold_in(jax.random.fold_in(dropout_rng, qi), ki)
        keep = jax.random.bernoulli(rng, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
      acc = acc * correction[..., None] + jnp.einsum(
          "bhqk,bkhd->bhqd", weights.astype(dtype), v.astype(dtype)).astype(jnp.float32)
      return (new_max, normaliser, acc), None

    init = (jnp.full((batch, heads, block), -jnp.inf, jnp.float32),
            jnp.zeros((batch, heads, block), jnp.float32),
            jnp.zeros((batch, heads, block, head_dim), jnp.float32))
    (_, normaliser, acc), _ = lax.scan(
        jax.checkpoint(per_key_block), init,
        (jnp.arange(num_blocks), k_blocks, v_blocks, valid_b, prefix_b, segment_b, pos_b))
    return (acc / normaliser[..., None]).astype(dtype)  # [batch, heads, block, head_dim]

  out = lax.map(per_query_block,
                (jnp.arange(num_blocks), q_blocks, valid_b, prefix_b, segment_b, pos_b))
  # [blocks, batch, heads, block, head_dim] -> [batch, length, heads, head_dim]
  out = jnp.transpose(out, (1, 2, 0, 3, 4)).reshape(batch, heads, padded, head_dim)
  return jnp.swapaxes(out, 1, 2)[:, :length]
