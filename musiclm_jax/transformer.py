"""Decoder-only stage Transformer (T5.1.1-style), the network of all three MusicLM stages.

Pre-norm residual blocks (RMSNorm), T5 relative position bias shared by all layers,
gated-GELU MLP, untied output projection. The call signature and features are t5x's
decoder-only ones, so seqio's PrefixLM feature converter feeds it directly.
"""
import dataclasses
from typing import Optional

import flax.linen as nn
import gin
import jax.numpy as jnp

from musiclm_jax.layers.attention import MultiHeadAttention
from musiclm_jax.layers.linears import GatedGeluMlp, dense
from musiclm_jax.layers.normalization import RMSNorm
from musiclm_jax.layers.relative_position import RelativePositionBiases

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name_or_dtype):
  if isinstance(name_or_dtype, str):
    if name_or_dtype not in _DTYPES:
      raise ValueError(f"unknown dtype {name_or_dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name_or_dtype]
  return name_or_dtype


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Sizes live in gin/models/stage/{tiny,base,paper}.gin."""
  vocab_size: int = 1026
  emb_dim: int = 512
  num_heads: int = 8
  head_dim: int = 64
  mlp_dim: int = 2048
  num_layers: int = 6
  dropout_rate: float = 0.1
  relpos_num_buckets: int = 32
  relpos_max_distance: int = 128
  dtype: str = "float32"        # compute dtype
  param_dtype: str = "float32"  # storage dtype of parameters (and optimizer moments)
  remat: bool = False           # recompute each layer's activations in the backward pass

  def __post_init__(self):
    for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_layers"):
      if getattr(self, field) <= 0:
        raise ValueError(f"TransformerConfig.{field} must be positive, got {getattr(self, field)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"TransformerConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    as_dtype(self.dtype), as_dtype(self.param_dtype)


def make_attention_mask(decoder_target_tokens, decoder_causal_attention=None,
                        decoder_segment_ids=None):
  """Bool `[batch, 1, length, length]`: causal, bidirectional inside the prefix, no padding,
  no attention across packed segments (t5x's `make_decoder_mask`)."""
  length = decoder_target_tokens.shape[-1]
  positions = jnp.arange(length)
  mask = positions[None, :, None] >= positions[None, None, :]
  if decoder_causal_attention is not None:
    prefix = decoder_causal_attention.astype(bool)
    mask = mask | (prefix[:, :, None] & prefix[:, None, :])
  not_padding = decoder_target_tokens > 0
  mask = mask & not_padding[:, :, None] & not_padding[:, None, :]
  if decoder_segment_ids is not None:
    mask = mask & (decoder_segment_ids[:, :, None] == decoder_segment_ids[:, None, :])
  return mask[:, None, :, :]


class DecoderLayer(nn.Module):
  config: TransformerConfig

  @nn.compact
  def __call__(self, x, mask, bias_fn, deterministic: bool, decode: bool, prefill_lengths,
               key_valid):
    cfg = self.config
    kw = dict(dtype=as_dtype(cfg.dtype), param_dtype=as_dtype(cfg.param_dtype))
    h = RMSNorm(name="pre_attention_norm", **kw)(x)
    h = MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, name="attention",
                           **kw)(h, mask, bias_fn, deterministic=deterministic, decode=decode,
                                 prefill_lengths=prefill_lengths, key_valid=key_valid)
    x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
    h = RMSNorm(name="pre_mlp_norm", **kw)(x)
    h = GatedGeluMlp(cfg.mlp_dim, cfg.dropout_rate, name="mlp", **kw)(h, deterministic=deterministic)
    x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
    return nn.with_logical_constraint(
        x, ("activation_batch", "activation_length", "activation_embed"))


class DecoderOnlyTransformer(nn.Module):
  """`[batch, length]` token ids -> `[batch, length, vocab]` float32 logits."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, decoder_input_tokens, decoder_target_tokens=None,
               decoder_segment_ids=None, decoder_positions=None,
               decoder_causal_attention=None, *, enable_dropout: bool = True,
               decode: bool = False, max_decode_length: Optional[int] = None,
               prefill: bool = False, prefill_lengths=None):
    """t5x's decoder-only signature. `decoder_positions` is accepted for compatibility;
    relative positions within a packed segment do not depend on it.

    decode without prefill: one step from the cache (`decoder_input_tokens` `[batch, 1]`).
    decode with prefill: fill the cache from the full sequence up to `prefill_lengths`.
    """
    del decoder_positions, max_decode_length
    cfg = self.config
    dtype = as_dtype(cfg.dtype)
    deterministic = not enable_dropout
    if decoder_target_tokens is None:
      decoder_target_tokens = decoder_input_tokens
    if prefill and prefill_lengths is None:
      raise ValueError("prefill=True needs prefill_lengths")
    # In prefill, `decoder_target_tokens` marks which prompt positions are real (nonzero):
    # positions past the prompt are unknown yet and must be passed as nonzero.
    mask = make_attention_mask(decoder_target_tokens, decoder_causal_attention,
                               decoder_segment_ids)
    key_valid = decoder_target_tokens > 0 if prefill else None

    embed = nn.Embed(
        num_embeddings=cfg.vocab_size, features=cfg.emb_dim, dtype=dtype,
        param_dtype=as_dtype(cfg.param_dtype),
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
        name="token_embedder")
    x = embed(decoder_input_tokens.astype(jnp.int32))
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))

    relpos = RelativePositionBiases(
        cfg.num_heads, cfg.relpos_num_buckets, cfg.relpos_max_distance, bidirectional=False,
        dtype=dtype, param_dtype=as_dtype(cfg.param_dtype), name="relpos_bias")
    # static: bias_fn (a module), deterministic, decode (argument 0 is self).
    layer_cls = nn.remat(DecoderLayer, static_argnums=(3, 4, 5)) if cfg.remat else DecoderLayer
    for i in range(cfg.num_layers):
      x = layer_cls(cfg, name=f"layers_{i}")(x, mask, relpos, deterministic, decode,
                                              prefill_lengths if prefill else None, key_valid)
    x = RMSNorm(dtype=dtype, param_dtype=as_dtype(cfg.param_dtype), name="decoder_norm")(x)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
    logits = dense(cfg.vocab_size, ("embed", "vocab"), dtype=jnp.float32,
                   param_dtype=as_dtype(cfg.param_dtype), name="logits_dense")(x)
    return nn.with_logical_constraint(
        logits, ("activation_batch", "activation_length", "activation_vocab"))


# Flax modules are dataclasses; registering (not decorating) keeps flax's transform intact.
gin.external_configurable(DecoderOnlyTransformer, module="transformer")
