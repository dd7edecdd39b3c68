"""ResNet (He et al., 2016) over a log-mel spectrogram seen as a one-channel image: MuLan's
audio tower backbone.

  log-mel [batch, frames, mels] -> stem conv (+ max-pool) -> stages of residual blocks
      -> features [batch, frames / s, mels / s, width * 2^(stages-1) * expansion]

`resnet50()` is the paper's: bottleneck blocks (1x1, 3x3, 1x1, expansion 4) in stages of
3, 4, 6, 3 with widths 64..512, 23.5M parameters; `tiny()` is for tests and the demo.

GroupNorm, not BatchNorm: a contrastive loss with per-device batch statistics leaks which
examples share a device (SimCLR needed a global BatchNorm for that reason), and group
statistics do not depend on how the batch is sharded, so the 8-device step equals the
1-device step. It also leaves no running statistics to carry in the train state.
"""
import dataclasses
from typing import Sequence

import flax.linen as nn
import gin
import jax.numpy as jnp

from musiclm_jax.layers.convs import ACTIVATION_AXES_2D, Conv2D


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """stage_sizes: blocks per stage; each stage after the first halves time and frequency."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  bottleneck: bool = True
  stem_kernel: int = 7
  stem_stride: int = 2
  stem_pool: bool = True
  norm_groups: int = 32

  def __post_init__(self):
    if not self.stage_sizes or any(n <= 0 for n in self.stage_sizes):
      raise ValueError(f"ResNetConfig.stage_sizes must be positive, got {self.stage_sizes}")
    if self.width <= 0 or self.width % self.norm_groups:
      raise ValueError(f"ResNetConfig.width ({self.width}) must be a positive multiple of "
                       f"norm_groups ({self.norm_groups}) so GroupNorm can split it")

  @property
  def expansion(self) -> int:
    return 4 if self.bottleneck else 1

  @property
  def output_dim(self) -> int:
    return self.width * 2 ** (len(self.stage_sizes) - 1) * self.expansion


def resnet50(**overrides) -> ResNetConfig:
  return ResNetConfig(**overrides)


def tiny(**overrides) -> ResNetConfig:
  kwargs = dict(stage_sizes=(1, 1, 1), width=16, bottleneck=False, stem_kernel=3,
                norm_groups=4)
  kwargs.update(overrides)
  return ResNetConfig(**kwargs)


gin.register(resnet50, module="resnet")
gin.register(tiny, module="resnet")


def group_norm(groups: int, name: str, zero_init: bool = False, **kw) -> nn.GroupNorm:
  # A block's last norm starts at zero (Goyal et al., 2017): every block begins as the
  # identity, so the deep stack trains from step 0 without warm-up tricks.
  scale_init = nn.initializers.zeros if zero_init else nn.initializers.ones
  return nn.GroupNorm(num_groups=groups, name=name,
                      scale_init=nn.with_logical_partitioning(scale_init, ("conv_out",)),
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                      **kw)


class ResidualBlock(nn.Module):
  """Basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1 x4) block; the stride is on the 3x3
  (ResNet v1.5) and a 1x1 projection matches the shortcut when the shape changes."""
  width: int
  strides: int
  bottleneck: bool
  groups: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    strides = self.strides

    def conv_norm(y, features, kernel, stride, i, zero_init=False):
      y = Conv2D(features, (kernel, kernel), (stride, stride), use_bias=False, name=f"conv_{i}",
                 **kw)(y)
      return group_norm(self.groups, f"norm_{i}", zero_init=zero_init, **kw)(y)

    if self.bottleneck:
      out_dim = self.width * 4
      y = nn.relu(conv_norm(x, self.width, 1, 1, 0))
      y = nn.relu(conv_norm(y, self.width, 3, strides, 1))
      y = conv_norm(y, out_dim, 1, 1, 2, zero_init=True)
    else:
      out_dim = self.width
      y = nn.relu(conv_norm(x, self.width, 3, strides, 0))
      y = conv_norm(y, out_dim, 3, 1, 1, zero_init=True)
    shortcut = x
    if x.shape[-1] != out_dim or strides != 1:
      shortcut = Conv2D(out_dim, (1, 1), (strides, strides), use_bias=False, name="shortcut",
                        **kw)(x)
      shortcut = group_norm(self.groups, "shortcut_norm", **kw)(shortcut)
    return nn.with_logical_constraint(nn.relu(y + shortcut), ACTIVATION_AXES_2D)


class ResNet(nn.Module):
  """`[batch, frames, mels] -> [batch, frames', mels', output_dim]` feature map."""
  config: ResNetConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, spectrogram):
    cfg = self.config
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = spectrogram[..., None]
    stem = (cfg.stem_kernel, cfg.stem_kernel)
    x = Conv2D(cfg.width, stem, (cfg.stem_stride,) * 2, use_bias=False, name="stem", **kw)(x)
    x = nn.relu(group_norm(cfg.norm_groups, "stem_norm", **kw)(x))
    if cfg.stem_pool:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for stage, num_blocks in enumerate(cfg.stage_sizes):
      for block in range(num_blocks):
        x = ResidualBlock(cfg.width * 2 ** stage, 2 if stage > 0 and block == 0 else 1,
                          cfg.bottleneck, cfg.norm_groups, name=f"stage_{stage}_block_{block}",
                          **kw)(x)
    return x
