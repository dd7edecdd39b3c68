"""Dense projections with logical axes, and the gated-GELU MLP (T5.1.1)."""
from typing import Sequence, Tuple, Union

import flax.linen as nn
import jax.numpy as jnp
from jax import lax


def _normalize_axes(axes, ndim):
  return tuple(a % ndim for a in (axes if isinstance(axes, tuple) else (axes,)))


class DenseGeneral(nn.Module):
  """Bias-free contraction of input `axis` with a kernel `[*contracted, *features]`.

  Flax's DenseGeneral initialises a flattened 2-D kernel and reshapes it, so a logical
  annotation of the real (e.g. 3-D `embed, heads, kv`) kernel fails under a mesh; this
  one creates the kernel in its true shape. Init: T5's fan-in truncated normal.
  """
  features: Union[int, Tuple[int, ...]]
  kernel_axes: Tuple[str, ...]
  axis: Union[int, Tuple[int, ...]] = -1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = self.features if isinstance(self.features, tuple) else (self.features,)
    axis = _normalize_axes(self.axis, x.ndim)
    contracted = tuple(x.shape[a] for a in axis)
    n_in = len(contracted)
    init = nn.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=tuple(range(n_in)),
        out_axis=tuple(range(n_in, n_in + len(features))))
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.kernel_axes),
                        contracted + features, self.param_dtype)
    kernel = jnp.asarray(kernel, self.dtype)
    x = jnp.asarray(x, self.dtype)
    lead = x.ndim - n_in
    if lead > 1 and axis == tuple(range(lead, x.ndim)):
      # One leading axis instead of [batch, length]: the weight gradient then contracts a
      # single axis. With two, XLA:CPU's dot canonicalisation transposes the [tokens, features]
      # output gradient in a strided loop fusion before the weight-gradient matmul, which
      # took ~30% of a stage train step (bench/README.md, "Where a train step's time goes").
      y = lax.dot_general(x.reshape(-1, *contracted), kernel,
                          ((tuple(range(1, n_in + 1)), tuple(range(n_in))), ((), ())))
      return y.reshape(*x.shape[:lead], *features)
    return lax.dot_general(x, kernel, ((axis, tuple(range(n_in))), ((), ())))


def dense(features, axes: Sequence[str], *, dtype, param_dtype, name: str, axis=-1):
  """A DenseGeneral whose kernel is annotated with logical `axes`."""
  return DenseGeneral(features=features, kernel_axes=tuple(axes), axis=axis, dtype=dtype,
                      param_dtype=param_dtype, name=name)


class GatedGeluMlp(nn.Module):
  """`[batch, length, embed] -> [batch, length, embed]` via gelu(x W_0) * (x W_1) W_out."""
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    gate = dense(self.mlp_dim, ("embed", "mlp"), name="wi_0", **kw)(x)
    linear = dense(self.mlp_dim, ("embed", "mlp"), name="wi_1", **kw)(x)
    h = nn.gelu(gate, approximate=True) * linear
    h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
    h = nn.Dropout(self.dropout_rate, broadcast_dims=(-2,))(h, deterministic=deterministic)
    out = dense(x.shape[-1], ("mlp", "embed"), name="wo", **kw)(h)
    return nn.with_logical_constraint(
        out, ("activation_batch", "activation_length", "activation_embed"))
