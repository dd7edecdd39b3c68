"""Decoder-only stage Transformer (T5.1.1-style), the network of all three MusicLM stages.

Pre-norm residual blocks (RMSNorm), T5 relative position bias shared by all layers,
gated-GELU MLP, untied output projection. The call signature and features are t5x's
decoder-only ones, so seqio's PrefixLM feature converter feeds it directly.
"""
import dataclasses
from typing import Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from musiclm_jax.layers.attention import MultiHeadAttention
from musiclm_jax.layers.blockwise_attention import TokenMask
from musiclm_jax.layers.flash_attention import attention_bias
from musiclm_jax.layers.linears import GatedGeluMlp, dense
from musiclm_jax.layers.normalization import RMSNorm
from musiclm_jax.layers.relative_position import RelativePositionBiases, offset_table

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name_or_dtype):
  if isinstance(name_or_dtype, str):
    if name_or_dtype not in _DTYPES:
      raise ValueError(f"unknown dtype {name_or_dtype!r}; expected one of {sorted(_DTYPES)}")
    return _DTYPES[name_or_dtype]
  return name_or_dtype


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    # Matmuls with no batch dimension are the weight projections; attention's score and value
    # einsums carry batch and head dimensions, so they are recomputed, not stored.
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Sizes live in musiclm_jax/gin/models/stage/{tiny,base,paper}.gin."""
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
  # What the backward pass recomputes per layer (REMAT_POLICIES): "none", "full" (everything
  # but the layer's input) or "dots_saveable" (keeps the weight matmuls' outputs, recomputes
  # attention and elementwise ops). True / False mean "full" / "none".
  remat: str = "none"
  # Layers as one nn.scan over stacked parameters (`layers/...` with a leading layer axis):
  # one layer is compiled instead of num_layers. Checkpoints of the two layouts differ.
  scan_layers: bool = False
  # "reference" materialises [batch, heads, T, T] scores per layer; "blockwise" never does
  # (layers/blockwise_attention.py), blocks of `attention_block_size` queries and keys;
  # "flash" is the Pallas TPU kernel (layers/flash_attention.py; interpreted, slowly, off
  # TPU) with one [batch, heads, T, T] bias per forward and no attention-weight dropout.
  attention: str = "reference"
  attention_block_size: int = 512

  def __post_init__(self):
    if isinstance(self.remat, bool):
      object.__setattr__(self, "remat", "full" if self.remat else "none")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"TransformerConfig.remat must be one of {sorted(REMAT_POLICIES)}, got "
                       f"{self.remat!r}")
    for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_layers"):
      if getattr(self, field) <= 0:
        raise ValueError(f"TransformerConfig.{field} must be positive, got {getattr(self, field)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"TransformerConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    as_dtype(self.dtype), as_dtype(self.param_dtype)
    if self.attention not in ("reference", "blockwise", "flash"):
      raise ValueError("TransformerConfig.attention must be 'reference', 'blockwise' or "
                       f"'flash', got {self.attention!r}")
    if self.attention_block_size <= 0:
      raise ValueError("TransformerConfig.attention_block_size must be positive, got "
                       f"{self.attention_block_size}")


class DecoderLayer(nn.Module):
  """One pre-norm block. Under nn.scan it returns `(x, None)`: scan's (carry, output)."""
  config: TransformerConfig
  deterministic: bool = True
  decode: bool = False
  scanned: bool = False

  @nn.compact
  def __call__(self, x, mask, relative_bias, prefill_lengths, key_valid, token_mask,
               flash_bias):
    cfg = self.config
    deterministic = self.deterministic
    kw = dict(dtype=as_dtype(cfg.dtype), param_dtype=as_dtype(cfg.param_dtype))
    h = RMSNorm(name="pre_attention_norm", **kw)(x)
    h = MultiHeadAttention(cfg.num_heads, cfg.head_dim, cfg.dropout_rate, name="attention",
                           impl=cfg.attention, block_size=cfg.attention_block_size,
                           **kw)(h, mask, relative_bias, deterministic=deterministic,
                                 decode=self.decode, prefill_lengths=prefill_lengths,
                                 key_valid=key_valid, token_mask=token_mask,
                                 flash_bias=flash_bias)
    x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
    h = RMSNorm(name="pre_mlp_norm", **kw)(x)
    h = GatedGeluMlp(cfg.mlp_dim, cfg.dropout_rate, name="mlp", **kw)(h, deterministic=deterministic)
    x = x + nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
    x = nn.with_logical_constraint(x, ("activation_batch", "activation_length", "activation_embed"))
    return (x, None) if self.scanned else x


def _layer_stack(cfg: TransformerConfig, deterministic: bool, decode: bool):
  """The layers as a callable `(x, *broadcast args) -> x`: a loop of named layers, or one
  nn.scan, each optionally under the configured remat policy."""
  layer_cls = DecoderLayer
  if cfg.remat != "none":
    # prevent_cse guards remat against XLA merging the recomputation with the forward; scan
    # already keeps them apart, and the flag would cost it performance (flax's advice).
    layer_cls = nn.remat(layer_cls, policy=REMAT_POLICIES[cfg.remat],
                         prevent_cse=not cfg.scan_layers)
  if not cfg.scan_layers:
    layers = [layer_cls(cfg, deterministic, decode, name=f"layers_{i}")
              for i in range(cfg.num_layers)]

    def run(x, *args):
      for layer in layers:
        x = layer(x, *args)
      return x
    return run
  scanned = nn.scan(
      layer_cls, variable_axes={"params": 0, "cache": 1},
      split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast,
      length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
  stack = scanned(cfg, deterministic, decode, scanned=True, name="layers")
  # The cache keeps batch first ([batch, layers, ...]) so sampling can tile and slice it.
  return lambda x, *args: stack(x, *args)[0]


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
    token_mask = TokenMask.from_features(decoder_target_tokens, decoder_causal_attention,
                                         decoder_segment_ids)
    # A single decoding step attends through the cache, which neither kernel path does.
    full_sequence = prefill or not decode
    blockwise = cfg.attention == "blockwise" and full_sequence
    flash = cfg.attention == "flash" and full_sequence
    mask = None if blockwise or flash else token_mask.dense()
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
    # One bias table per forward, shared by the layers (T5 shares its bias module likewise).
    relative_bias = offset_table(relpos)
    x = _layer_stack(cfg, deterministic, decode)(
        x, mask, relative_bias, prefill_lengths if prefill else None, key_valid,
        token_mask if blockwise else None,
        attention_bias(relative_bias, token_mask, dtype) if flash else None)
    x = RMSNorm(dtype=dtype, param_dtype=as_dtype(cfg.param_dtype), name="decoder_norm")(x)
    x = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)
    logits = dense(cfg.vocab_size, ("embed", "vocab"), dtype=jnp.float32,
                   param_dtype=as_dtype(cfg.param_dtype), name="logits_dense")(x)
    return nn.with_logical_constraint(
        logits, ("activation_batch", "activation_length", "activation_vocab"))


# Flax modules are dataclasses; registering (not decorating) keeps flax's transform intact.
gin.external_configurable(DecoderOnlyTransformer, module="transformer")
