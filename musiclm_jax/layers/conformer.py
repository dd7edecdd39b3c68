"""Conformer layers (Gulati et al. 2020), the encoder of w2v-BERT.

One layer: x + FF/2, x + MHSA (T5 relative position bias, bidirectional), x + convolution
module, x + FF/2, LayerNorm. Every parameter and main activation carries logical axis names
(the stage Transformer's: `embed`, `mlp`, `heads`, `kv`, plus `conv_width` for the
depthwise taps), so the same rules table shards both.

Departure from the paper: the convolution module normalises with LayerNorm, not BatchNorm.
Batch statistics would make a clip's semantic tokens depend on the other clips in its batch
(and need a cross-device mean and a mutable collection); LayerNorm keeps the tokenizer a pure
function of one clip.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from musiclm_jax.layers.attention import MultiHeadAttention
from musiclm_jax.layers.linears import dense
from musiclm_jax.layers.relative_position import RelativePositionBiases, offset_table

_EMBED_AXES = ("activation_batch", "activation_length", "activation_embed")
_MLP_AXES = ("activation_batch", "activation_length", "activation_mlp")


def layer_norm(axis_name: str, *, name: str, dtype, param_dtype) -> nn.LayerNorm:
  """LayerNorm over the last axis whose scale and bias carry the logical name `axis_name`."""
  return nn.LayerNorm(
      epsilon=1e-6, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_name,)))


class FeedForward(nn.Module):
  """`[batch, time, embed] -> [batch, time, embed]`: norm, linear, swish, linear (Macaron
  half-step: the layer adds half of it)."""
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layer_norm("embed", name="norm", **kw)(x)
    h = nn.swish(dense(self.mlp_dim, ("embed", "mlp"), name="wi", **kw)(h))
    h = nn.with_logical_constraint(h, _MLP_AXES)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    h = dense(x.shape[-1], ("mlp", "embed"), name="wo", **kw)(h)
    return nn.with_logical_constraint(h, _EMBED_AXES)


class DepthwiseConv1d(nn.Module):
  """`[batch, time, channels] -> same`: one `kernel_size`-tap filter per channel, centred
  (SAME padding). A sum of shifted copies: elementwise in channels, so it shards like them."""
  kernel_size: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(nn.initializers.lecun_normal(in_axis=0, out_axis=1),
                                               ("conv_width", "mlp")),
        (self.kernel_size, x.shape[-1]), self.param_dtype)
    kernel = jnp.asarray(kernel, self.dtype)
    left = (self.kernel_size - 1) // 2
    padded = jnp.pad(x, ((0, 0), (left, self.kernel_size - 1 - left), (0, 0)))
    length = x.shape[1]
    return sum(padded[:, k:k + length] * kernel[k] for k in range(self.kernel_size))


class ConvolutionModule(nn.Module):
  """`[batch, time, embed] -> [batch, time, embed]`: norm, pointwise GLU, depthwise conv,
  norm, swish, pointwise. The inner channels are `mlp`-named so tensor parallelism splits
  them like the feed-forward's hidden units."""
  kernel_size: int = 5
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    width = x.shape[-1]
    h = layer_norm("embed", name="norm", **kw)(x)
    # GLU as two projections rather than one split in half: a split of a model-sharded axis
    # would reshuffle it across devices.
    value = dense(width, ("embed", "mlp"), name="pointwise_value", **kw)(h)
    gate = dense(width, ("embed", "mlp"), name="pointwise_gate", **kw)(h)
    h = nn.with_logical_constraint(value * nn.sigmoid(gate), _MLP_AXES)
    h = DepthwiseConv1d(self.kernel_size, name="depthwise", **kw)(h)
    h = nn.swish(layer_norm("mlp", name="depthwise_norm", **kw)(h))
    h = nn.with_logical_constraint(h, _MLP_AXES)
    h = dense(width, ("mlp", "embed"), name="pointwise_out", **kw)(h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.with_logical_constraint(h, _EMBED_AXES)


class ConformerLayer(nn.Module):
  """`[batch, time, embed] -> [batch, time, embed]`."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  conv_kernel_size: int = 5
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask, relative_bias, deterministic: bool):
    """mask: bool `[batch or 1, 1, time, time]`; relative_bias: relative_position.offset_table."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    x = x + 0.5 * FeedForward(self.mlp_dim, self.dropout_rate, name="ff_start", **kw)(
        x, deterministic=deterministic)
    h = layer_norm("embed", name="attention_norm", **kw)(x)
    h = MultiHeadAttention(self.num_heads, self.head_dim, self.dropout_rate, name="attention",
                           **kw)(h, mask, relative_bias, deterministic=deterministic)
    x = x + drop(h)
    x = x + ConvolutionModule(self.conv_kernel_size, self.dropout_rate, name="conv", **kw)(
        x, deterministic=deterministic)
    x = x + 0.5 * FeedForward(self.mlp_dim, self.dropout_rate, name="ff_end", **kw)(
        x, deterministic=deterministic)
    x = layer_norm("embed", name="final_norm", **kw)(x)
    return nn.with_logical_constraint(x, _EMBED_AXES)


class ConformerStack(nn.Module):
  """`num_layers` Conformer layers sharing one relative position bias table.

  Returns the output of every layer run, `[num_run, batch, time, embed]` as a list;
  `num_layers_to_run` stops early (feature extraction from an intermediate layer does not
  pay for the layers above it).
  """
  num_layers: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  conv_kernel_size: int = 5
  dropout_rate: float = 0.0
  relpos_num_buckets: int = 32
  relpos_max_distance: int = 128
  remat: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool, num_layers_to_run: Optional[int] = None):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    num_run = self.num_layers if num_layers_to_run is None else num_layers_to_run
    if not 0 <= num_run <= self.num_layers:
      raise ValueError(f"num_layers_to_run={num_run} must be in [0, {self.num_layers}]")
    relpos = RelativePositionBiases(self.num_heads, self.relpos_num_buckets,
                                    self.relpos_max_distance, bidirectional=True,
                                    name="relpos_bias", **kw)
    # Every frame sees every frame: the encoder is bidirectional and clips are unpadded
    # (fixed training crops; the tokenizer pads only the last 40 ms frame).
    mask = jnp.ones((1, 1, x.shape[1], x.shape[1]), bool)
    relative_bias = offset_table(relpos)
    layer_cls = nn.remat(ConformerLayer, static_argnums=(4,)) if self.remat else ConformerLayer
    outputs = []
    for i in range(num_run):
      layer = layer_cls(self.num_heads, self.head_dim, self.mlp_dim, self.conv_kernel_size,
                        self.dropout_rate, name=f"layers_{i}", **kw)
      x = layer(x, mask, relative_bias, deterministic)
      outputs.append(x)
    return outputs
