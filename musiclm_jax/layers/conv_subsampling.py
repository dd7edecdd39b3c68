"""Conformer front end: two stride-2 2-D convolutions over a log-mel spectrogram (4x in time).

w2v-BERT's feature encoder (Chung et al. 2021, §3.1): 10 ms mel frames become 40 ms vectors,
i.e. 100 Hz -> 25 Hz, the rate of MusicLM's semantic tokens.
"""
import flax.linen as nn
import jax.numpy as jnp

from musiclm_jax.layers.convs import Conv2D
from musiclm_jax.layers.linears import dense

SUBSAMPLING_FACTOR = 4  # two convolutions of stride 2


class ConvSubsampling(nn.Module):
  """`[batch, frames, mels] -> [batch, ceil(frames / 4), embed]`.

  conv(3x3, /2) -> ReLU -> conv(3x3, /2) -> ReLU -> flatten (mels / 4 x channels) -> linear.
  The convolution kernels are small (3 x 3 x channels^2) and stay replicated.
  """
  emb_dim: int
  channels: int = 128
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, log_mel):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = log_mel[..., None]  # one input channel
    for i in range(2):
      x = nn.relu(Conv2D(self.channels, (3, 3), (2, 2), name=f"conv_{i}", **kw)(x))
    # One vector per 40 ms: contract the remaining (mels / 4) x channels into the model width.
    x = dense(self.emb_dim, ("mel_bins", "conv_out", "embed"), axis=(-2, -1),
              name="projection", **kw)(x)
    return nn.with_logical_constraint(
        x, ("activation_batch", "activation_length", "activation_embed"))
