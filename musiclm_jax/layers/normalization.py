"""RMSNorm (T5's LayerNorm without mean subtraction or bias)."""
import flax.linen as nn
import jax.numpy as jnp
from jax import lax


class RMSNorm(nn.Module):
  """Scales by the reciprocal root-mean-square over the last axis `[..., embed]`."""
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    # Statistics in float32 even for bfloat16 compute: the mean of squares underflows otherwise.
    x32 = x.astype(jnp.float32)
    mean_square = jnp.mean(lax.square(x32), axis=-1, keepdims=True)
    y = (x32 * lax.rsqrt(mean_square + self.epsilon)).astype(self.dtype)
    scale = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        (x.shape[-1],),
        self.param_dtype,
    )
    return y * jnp.asarray(scale, self.dtype)
