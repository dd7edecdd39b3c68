"""SoundStream's discriminators (Sec. 3.4): one on the complex STFT, three on the waveform.

Each discriminator maps `wav [batch, samples]` to `(logits [batch, time'], features)`, the
features being every intermediate activation, which the generator's feature-matching loss
compares between real and decoded audio. Leaky ReLU (0.2) as in MelGAN, no normalisation.
"""
import dataclasses
from typing import Sequence, Tuple

import flax.linen as nn
import gin
import jax.numpy as jnp

from musiclm_jax.core import audio
from musiclm_jax.layers.convs import Conv1D, Conv2D

_SLOPE = 0.2


class STFTResidualUnit(nn.Module):
  """`[b, t, f, c] -> [b, t / s_t, f / s_f, features]`: 3x3 conv, then a strided
  (s_t + 2) x (s_f + 2) conv, plus a strided 1x1 projection on the skip path."""
  features: int
  strides: Tuple[int, int]

  @nn.compact
  def __call__(self, x):
    s_t, s_f = self.strides
    h = nn.leaky_relu(Conv2D(x.shape[-1], (3, 3), name="conv")(x), _SLOPE)
    h = Conv2D(self.features, (s_t + 2, s_f + 2), strides=(s_t, s_f), name="strided_conv")(h)
    skip = Conv2D(self.features, (1, 1), strides=(s_t, s_f), use_bias=False, name="skip")(x)
    return nn.leaky_relu(h + skip, _SLOPE)


class STFTDiscriminator(nn.Module):
  """On the real and imaginary parts of an STFT (window W, hop H): a 7x7 conv with C channels,
  residual units with channel multipliers and alternating (1, 2) / (2, 2) strides (time,
  frequency), then one linear map over the remaining frequency bins -> a logit per frame."""
  window: int = 1024
  hop: int = 256
  channels: int = 32
  multipliers: Tuple[int, ...] = (2, 4, 4, 8, 8, 16)
  strides: Tuple[Tuple[int, int], ...] = ((1, 2), (2, 2), (1, 2), (2, 2), (1, 2), (2, 2))

  @nn.compact
  def __call__(self, wav):
    spectrum = audio.stft(wav.astype(jnp.float32), self.window, self.hop)  # [b, t, bins]
    x = jnp.stack([spectrum.real, spectrum.imag], axis=-1)
    x = nn.leaky_relu(Conv2D(self.channels, (7, 7), name="input_conv")(x), _SLOPE)
    features = [x]
    for i, (multiplier, strides) in enumerate(zip(self.multipliers, self.strides)):
      x = STFTResidualUnit(self.channels * multiplier, tuple(strides), name=f"unit_{i}")(x)
      features.append(x)
    flat = x.reshape(*x.shape[:2], -1)  # every remaining frequency bin and channel
    logits = Conv1D(1, 1, padding="valid", name="output_conv")(flat)[..., 0]
    return logits, features


class WaveformDiscriminator(nn.Module):
  """MelGAN's discriminator at one scale: wide grouped, strided 1-D convs."""
  channels: int = 16
  downsample_channels: Tuple[int, ...] = (64, 256, 1024, 1024)
  groups: Tuple[int, ...] = (4, 16, 64, 256)
  final_channels: int = 1024

  @nn.compact
  def __call__(self, wav):
    x = nn.leaky_relu(Conv1D(self.channels, 15, padding="same", name="input_conv")(
        wav[..., None]), _SLOPE)
    features = [x]
    for i, (channels, groups) in enumerate(zip(self.downsample_channels, self.groups)):
      x = Conv1D(channels, 41, strides=4, groups=groups, padding="same",
                 name=f"downsample_{i}")(x)
      x = nn.leaky_relu(x, _SLOPE)
      features.append(x)
    x = nn.leaky_relu(Conv1D(self.final_channels, 5, padding="same", name="final_conv")(x),
                      _SLOPE)
    features.append(x)
    logits = Conv1D(1, 3, padding="same", name="output_conv")(x)[..., 0]
    return logits, features


def _average_pool(wav):
  """2x down-sampling between waveform scales (MelGAN: avg-pool, kernel 4, stride 2)."""
  return nn.avg_pool(wav[..., None], (4,), strides=(2,), padding=((1, 1),),
                     count_include_pad=False)[..., 0]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  """Sizes of the STFT and waveform discriminators (defaults: the paper's)."""
  stft_window: int = 1024
  stft_hop: int = 256
  stft_channels: int = 32
  stft_multipliers: Tuple[int, ...] = (2, 4, 4, 8, 8, 16)
  wave_scales: int = 3
  wave_channels: int = 16
  wave_downsample_channels: Tuple[int, ...] = (64, 256, 1024, 1024)
  wave_groups: Tuple[int, ...] = (4, 16, 64, 256)
  wave_final_channels: int = 1024

  def __post_init__(self):
    for name in ("stft_multipliers", "wave_downsample_channels", "wave_groups"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if len(self.wave_downsample_channels) != len(self.wave_groups):
      raise ValueError("DiscriminatorConfig.wave_downsample_channels and wave_groups must have "
                       f"the same length, got {self.wave_downsample_channels} and "
                       f"{self.wave_groups}")


class Discriminators(nn.Module):
  """All of them: `wav [b, s] -> [(logits, features)]`, STFT first, then waveform scales."""
  config: DiscriminatorConfig = DiscriminatorConfig()

  @nn.compact
  def __call__(self, wav) -> Sequence[tuple]:
    cfg = self.config
    strides = tuple(((1, 2), (2, 2))[i % 2] for i in range(len(cfg.stft_multipliers)))
    outputs = [STFTDiscriminator(cfg.stft_window, cfg.stft_hop, cfg.stft_channels,
                                 cfg.stft_multipliers, strides, name="stft")(wav)]
    for scale in range(cfg.wave_scales):
      outputs.append(WaveformDiscriminator(
          cfg.wave_channels, cfg.wave_downsample_channels, cfg.wave_groups,
          cfg.wave_final_channels, name=f"waveform_{scale}")(wav))
      wav = _average_pool(wav)
    return outputs
