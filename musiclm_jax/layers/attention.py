"""Multi-head dot-product attention with logical axes and an autoregressive KV cache.

Cache layout (collection "cache"): `cached_key` `[batch, heads, kv, max_length]` and
`cached_value` `[batch, heads, max_length, kv]`, each as a decoding step's matmul reads it
(contracted axis, then the kept one), so no step copies the cache into another layout (in
`[batch, max_length, heads, kv]` XLA:CPU transposed both caches in every step: a fifth of a
sampling step's op time, bench/README.md); `cache_index` `[batch]`, the next position each
example writes; and `key_valid` `[batch, max_length]`. The index is per example so a batch
may hold prompts of different lengths (prefill sets it to each prompt length); `key_valid`
remembers prompt positions that are padding (e.g. conditioning blanked out for
classifier-free guidance) so decoding steps never attend to them.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from musiclm_jax.layers.blockwise_attention import TokenMask, blockwise_attention
from musiclm_jax.layers.flash_attention import flash_attention
from musiclm_jax.layers.linears import dense
from musiclm_jax.layers.relative_position import bias_from_table

_NEG_INF = -1e10  # large but finite: a fully-masked row must not produce NaN


def _write_at(cache, update, index, axis: int):
  """Writes `update` (length 1 along `axis`) into `cache` at per-example `index [b]` along
  `axis` (of the example's own axes)."""
  def write(c, u, i):
    start = [0] * c.ndim
    start[axis] = i
    return lax.dynamic_update_slice(c, u, tuple(start))
  return jax.vmap(write)(cache, update, index)


def _key_layout(key):
  """`[b, L, h, d]` -> the key cache's `[b, h, d, L]`."""
  return jnp.transpose(key, (0, 2, 3, 1))


def _value_layout(value):
  """`[b, L, h, d]` -> the value cache's `[b, h, L, d]`."""
  return jnp.swapaxes(value, 1, 2)


class MultiHeadAttention(nn.Module):
  """Self-attention `[batch, length, embed] -> [batch, length, embed]`."""
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  # "reference": materialised [b, h, q, k] scores; "blockwise": layers/blockwise_attention.py;
  # "flash": the Pallas TPU kernel of layers/flash_attention.py (no dropout on the attention
  # weights: the kernel has none). The last two take full sequences only; a single decoding
  # step always uses the reference arithmetic.
  impl: str = "reference"
  block_size: int = 512

  @nn.compact
  def __call__(self, x, mask, relative_bias, *, deterministic: bool, decode: bool = False,
               prefill_lengths=None, key_valid=None, token_mask: TokenMask = None,
               flash_bias=None):
    """mask: bool `[batch, 1, q, k]` (reference, when not single-step decoding).
    relative_bias: `[heads, 2 * M + 1]`, the position bias of each key-minus-query offset
    (relative_position.offset_table).
    key_valid: bool `[batch, length]`, stored in the cache at prefill (default: all valid).
    token_mask: the mask as per-token facts, for the blockwise path.
    flash_bias: bias and mask as one `[batch, heads, P, P]` array (flash_attention.
    attention_bias), for the flash path.
    decode: use/update the KV cache. With `prefill_lengths` the whole sequence is processed
    and cached, and the cache index is set to the lengths; otherwise `x` is one step.
    """
    if self.impl not in ("reference", "blockwise", "flash"):
      raise ValueError(f"attention impl {self.impl!r}; expected 'reference', 'blockwise' or "
                       "'flash'")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    heads_shape = (self.num_heads, self.head_dim)
    query = dense(heads_shape, ("embed", "heads", "kv"), name="query", **kw)(x)
    key = dense(heads_shape, ("embed", "heads", "kv"), name="key", **kw)(x)
    value = dense(heads_shape, ("embed", "heads", "kv"), name="value", **kw)(x)
    qkv_axes = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
    query = nn.with_logical_constraint(query, qkv_axes)
    key = nn.with_logical_constraint(key, qkv_axes)
    value = nn.with_logical_constraint(value, qkv_axes)

    # Scale the query, not the logits: cheaper, and what T5 does (folded into init there).
    query = query / jnp.sqrt(self.head_dim).astype(self.dtype)

    batch, length = x.shape[0], x.shape[1]
    positions = jnp.arange(length)[None, :]
    query_positions = key_positions = positions
    if decode:
      is_initialized = self.has_variable("cache", "cached_key")
      cached_key = self.variable("cache", "cached_key", jnp.zeros,
                                 (batch, self.num_heads, self.head_dim, length), key.dtype)
      cached_value = self.variable("cache", "cached_value", jnp.zeros,
                                   (batch, self.num_heads, length, self.head_dim), value.dtype)
      cache_index = self.variable("cache", "cache_index", jnp.zeros, (batch,), jnp.int32)
      cached_valid = self.variable("cache", "key_valid", jnp.ones, (batch, length), jnp.bool_)
      if is_initialized and prefill_lengths is not None:
        cached_key.value = _key_layout(key)
        cached_value.value = _value_layout(value)
        cache_index.value = prefill_lengths.astype(jnp.int32)
        if key_valid is not None:
          cached_valid.value = key_valid.astype(jnp.bool_)
      elif is_initialized:
        if length != 1:
          raise ValueError(f"single-step decoding takes one position, got length {length}")
        index = cache_index.value
        out = self._attend_cache_then_self(
            query, key, value, cached_key.value, cached_value.value, cached_valid.value,
            index, relative_bias, deterministic)
        # The writes must follow the reads for XLA to update the carried caches in place;
        # with no data path from read to write it copies both caches of every layer in each
        # step (bench/README.md, sample.py), and optimization barriers do not order them on
        # XLA:CPU. So the written values carry zero times the attention output. (Were that
        # output not finite, this step's logits would already be garbage.)
        after_reads = jnp.zeros((), out.dtype) * out.reshape(-1)[0]
        cached_key.value = _write_at(cached_key.value, _key_layout(key) + after_reads, index,
                                     axis=2)
        cached_value.value = _write_at(cached_value.value, _value_layout(value) + after_reads,
                                       index, axis=1)
        cached_valid.value = cached_valid.value | (
            jnp.arange(cached_valid.value.shape[1])[None, :] == index[:, None])
        cache_index.value = index + 1
        return self._project_out(out, x.shape[-1], qkv_axes, kw)

    # The transformer passes token_mask / flash_bias exactly when the blockwise / flash path
    # applies (not when it only builds the cache, nor for a single decoding step).
    if self.impl == "flash" and flash_bias is not None:
      out = flash_attention(query, key, value, flash_bias, block_size=self.block_size)
      return self._project_out(out, x.shape[-1], qkv_axes, kw)
    if self.impl == "blockwise" and token_mask is not None:
      use_dropout = not deterministic and self.dropout_rate > 0.0
      out = blockwise_attention(
          query, key, value, relative_bias, token_mask, block_size=self.block_size,
          dropout_rate=self.dropout_rate if use_dropout else 0.0,
          dropout_rng=self.make_rng("dropout") if use_dropout else None, dtype=self.dtype)
      return self._project_out(out, x.shape[-1], qkv_axes, kw)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
    logits = logits + bias_from_table(relative_bias, query_positions,
                                      key_positions).astype(logits.dtype)
    logits = jnp.where(mask, logits, jnp.asarray(_NEG_INF, logits.dtype))
    # Softmax in float32: bfloat16 exp/normalise loses too much for long sequences.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    return self._project_out(out, x.shape[-1], qkv_axes, kw)

  def _attend_cache_then_self(self, query, key, value, cached_key, cached_value, cached_valid,
                              index, relative_bias, deterministic: bool):
    """One decoding step's attention `[b, 1, h, d]`: over the cached positions before `index`
    (the cache as it was before this step), and over the step's own key and value, which
    join the softmax separately instead of through the cache. `query` comes scaled."""
    max_length = cached_value.shape[2]
    key_positions = jnp.arange(max_length)[None, :]
    query_positions = index[:, None]
    cache_logits = jnp.einsum("bqhd,bhdk->bhqk", query, cached_key)
    cache_logits = cache_logits + bias_from_table(relative_bias, query_positions,
                                                  key_positions).astype(cache_logits.dtype)
    seen = ((key_positions < query_positions) & cached_valid)[:, None, None, :]
    cache_logits = jnp.where(seen, cache_logits, jnp.asarray(_NEG_INF, cache_logits.dtype))
    own_logit = jnp.einsum("bqhd,bqhd->bhq", query, key)[..., None]
    own_logit = own_logit + bias_from_table(relative_bias, query_positions,
                                            query_positions).astype(own_logit.dtype)
    # Softmax in float32 over [cache, own], without concatenating the two.
    cache_logits = cache_logits.astype(jnp.float32)
    own_logit = own_logit.astype(jnp.float32)
    peak = jnp.maximum(cache_logits.max(axis=-1, keepdims=True), own_logit)
    cache_weights = jnp.exp(cache_logits - peak)
    own_weight = jnp.exp(own_logit - peak)
    total = cache_weights.sum(axis=-1, keepdims=True) + own_weight
    cache_weights = (cache_weights / total).astype(self.dtype)
    own_weight = (own_weight / total).astype(self.dtype)
    cache_weights = nn.Dropout(self.dropout_rate)(cache_weights, deterministic=deterministic)
    own_weight = nn.Dropout(self.dropout_rate)(own_weight, deterministic=deterministic)
    out = jnp.einsum("bhqk,bhkd->bqhd", cache_weights, cached_value)
    return out + jnp.einsum("bhqk,bkhd->bqhd", own_weight, value)

  def _project_out(self, out, features: int, qkv_axes, kw):
    out = nn.with_logical_constraint(out, qkv_axes)
    out = dense(features, ("heads", "kv", "embed"), axis=(-2, -1), name="out", **kw)(out)
    return nn.with_logical_constraint(
        out, ("activation_batch", "activation_length", "activation_embed"))
