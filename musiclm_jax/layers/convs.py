"""Convolutions with logical axes: causal 1-D (SoundStream's encoder / decoder) and plain 2-D
(its STFT discriminator).

Activations are channels-last: `[batch, time, channels]` and `[batch, time, freq, channels]`.
Kernels are `[width, in_channels / groups, out_channels]` (`conv_width, conv_in, conv_out`), so
the logical->mesh table decides whether channels are sharded; by default those names are not in
it and conv weights stay replicated (SoundStream is a few million parameters).

Causal padding (all padding on the left) is what makes the codec streamable: the output at
time t never reads input after t, so a decoder can run frame by frame with no look-ahead
(SoundStream, Sec. 3.1).
"""
from typing import Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

PADDINGS = ("causal", "same", "valid")
ACTIVATION_AXES_1D = ("activation_batch", "activation_length", "activation_channels")
ACTIVATION_AXES_2D = ("activation_batch", "activation_length", "activation_freq",
                      "activation_channels")


def _conv_init():
  # Fan-in scaling over the whole receptive field (width x in_channels): activations keep unit
  # variance through a deep stack of ELU convs without any normalisation layer. Uniform rather
  # than (truncated) normal: same variance, but normal samples go through erfinv, whose XLA
  # compilation, once per kernel shape, made initialising the tiny codec take 10-15 s on CPU.
  return nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class Conv1D(nn.Module):
  """`[batch, time, in] -> [batch, time // strides, features]`.

  padding: "causal" pads `(kernel_size - 1) * dilation - (strides - 1)` on the left, so with
  `time` a multiple of `strides` the output has exactly `time // strides` frames and frame n
  reads input samples up to `(n + 1) * strides - 1` (its own frame, never the next). "same"
  centres the kernel (discriminators need no causality); "valid" does not pad.
  """
  features: int
  kernel_size: int
  strides: int = 1
  dilation: int = 1
  groups: int = 1
  padding: str = "causal"
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.padding not in PADDINGS:
      raise ValueError(f"Conv1D padding={self.padding!r}; expected one of {PADDINGS}")
    in_features = x.shape[-1]
    if in_features % self.groups or self.features % self.groups:
      raise ValueError(f"Conv1D groups={self.groups} must divide in ({in_features}) and out "
                       f"({self.features}) channels")
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(_conv_init(), ("conv_width", "conv_in", "conv_out")),
        (self.kernel_size, in_features // self.groups, self.features), self.param_dtype)
    span = (self.kernel_size - 1) * self.dilation
    if self.padding == "causal":
      pad = [(max(span - (self.strides - 1), 0), 0)]
    elif self.padding == "same":
      pad = [(span // 2, span - span // 2)]
    else:
      pad = [(0, 0)]
    y = lax.conv_general_dilated(
        jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype),
        window_strides=(self.strides,), padding=pad, rhs_dilation=(self.dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=self.groups)
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                        (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, self.dtype)
    return nn.with_logical_constraint(y, ACTIVATION_AXES_1D)


class CausalConvTranspose1D(nn.Module):
  """Causal up-sampling `[batch, frames, in] -> [batch, frames * strides, features]`.

  Output sample `n * strides + p` (phase p) is `sum_j x[n - j] @ kernel[j * strides + p]`,
  j = 0 .. kernel_size / strides - 1: a transposed convolution with the `kernel_size - strides`
  samples that would lie in the future cut off, so sample t reads frames `<= t // strides`.
  Computed phase-wise as a few matmuls rather than as a convolution over a zero-dilated input:
  XLA's CPU convolution with lhs dilation was 5-35x slower on SoundStream's shapes, and
  matmuls are what TPUs do best. kernel_size is rounded up to a multiple of strides.
  """
  features: int
  kernel_size: int
  strides: int
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    taps = -(-self.kernel_size // self.strides)
    batch, frames, in_features = x.shape
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(_conv_init(), ("conv_width", "conv_in", "conv_out")),
        (taps * self.strides, in_features, self.features), self.param_dtype)
    # [taps, in, strides * features]: tap j maps frame n - j to all phases of output frame n.
    phases = jnp.asarray(kernel, self.dtype).reshape(
        taps, self.strides, in_features, self.features).transpose(0, 2, 1, 3).reshape(
            taps, in_features, self.strides * self.features)
    padded = jnp.pad(jnp.asarray(x, self.dtype), ((0, 0), (taps - 1, 0), (0, 0)))
    y = sum(padded[:, taps - 1 - j:taps - 1 - j + frames] @ phases[j] for j in range(taps))
    y = y.reshape(batch, frames * self.strides, self.features)
    # Each output reads in_features * taps inputs, not the kernel's fan-in
    # (kernel_size * in_features): rescale so activations keep the variance the init assumes.
    y = y * jnp.sqrt(jnp.asarray(self.strides, self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                        (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, self.dtype)
    return nn.with_logical_constraint(y, ACTIVATION_AXES_1D)


class Conv2D(nn.Module):
  """`[batch, time, freq, in] -> [batch, time / s_t, freq / s_f, features]`, "same" padding."""
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  use_bias: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
        "kernel", nn.with_logical_partitioning(
            _conv_init(), ("conv_height", "conv_width", "conv_in", "conv_out")),
        (*self.kernel_size, x.shape[-1], self.features), self.param_dtype)
    y = lax.conv_general_dilated(
        jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype),
        window_strides=tuple(self.strides), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                        (self.features,), self.param_dtype)
      y = y + jnp.asarray(bias, self.dtype)
    return nn.with_logical_constraint(y, ACTIVATION_AXES_2D)


def receptive_field(kernel_sizes: Sequence[int], dilations: Sequence[int],
                    strides: Sequence[int]) -> int:
  """Input samples one output of a stack of convs sees (for docs and tests)."""
  field, jump = 1, 1
  for k, d, s in zip(kernel_sizes, dilations, strides):
    field += (k - 1) * d * jump
    jump *= s
  return field
