"""Dense projections with logical axes, and the gated-GELU MLP (T5.1.1)."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# T5's variance-scaling init: fan-in scaled, truncated normal.
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def dense(features, axes: Sequence[str], *, dtype, param_dtype, name: str, axis=-1):
  """A bias-free DenseGeneral whose kernel is annotated with logical `axes`."""
  return nn.DenseGeneral(
      features=features,
      axis=axis,
      use_bias=False,
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(default_kernel_init, tuple(axes)),
      name=name,
  )


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
