"""SoundStream (Zeghidour et al., 2021): the neural audio codec that gives MusicLM its acoustic
tokens and turns generated tokens back into audio.

  wav [batch, samples] -> Encoder -> [batch, frames, embedding_dim] -> ResidualVectorQuantizer
      -> codes [batch, frames, levels] -> Decoder -> wav [batch, frames * hop]

Fully convolutional and causal (Sec. 3.1): residual units with dilations 1, 3, 9 and ELU, no
normalisation; each encoder block divides the time resolution by its stride and doubles the
channels, and the decoder mirrors it with transposed convolutions. The total stride (`hop`)
sets the frame rate: 480 at 24 kHz -> 50 Hz in the paper config.

`soundstream_gan.SoundStream` is the trainer's model (generator + discriminators, one GAN
step); `codec.Codec` is the encode / decode API for a trained checkpoint.
"""
import dataclasses
import math
from typing import Optional, Tuple

import flax.linen as nn
import gin

from musiclm_jax.stages import token_layout
from musiclm_jax.layers import rvq
from musiclm_jax.layers.convs import CausalConvTranspose1D, Conv1D
from musiclm_jax.stages.transformer import as_dtype


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SoundStreamConfig:
  """Codec sizes. Sample rate, hop, levels and codebook size come from the token layout (the
  one source of truth for MusicLM's acoustic stream); `strides` must multiply to its hop."""
  layout: token_layout.TokenLayout = token_layout.PAPER
  strides: Tuple[int, ...] = (2, 4, 6, 10)  # 480 = 24 kHz / 50 Hz
  channels: int = 32                         # C in Fig. 3; block i has C * 2^(i+1) channels
  embedding_dim: int = 512                   # D: the space the RVQ quantizes
  dilations: Tuple[int, ...] = (1, 3, 9)
  residual_kernel_size: int = 7
  ema_decay: float = 0.99
  dead_code_threshold: float = 2.0
  kmeans_iters: int = 10
  quantizer_dropout_rate: float = 1.0        # share of examples trained with a random n_q
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "strides", tuple(self.strides))
    object.__setattr__(self, "dilations", tuple(self.dilations))
    if math.prod(self.strides) != self.layout.acoustic_hop:
      raise ValueError(
          f"SoundStreamConfig.strides {self.strides} multiply to {math.prod(self.strides)}, but "
          f"the token layout's acoustic_hop is {self.layout.acoustic_hop} "
          f"({self.layout.acoustic_sample_rate} Hz / {self.layout.acoustic_rate_hz:g} Hz)")
    for name in ("channels", "embedding_dim", "residual_kernel_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"SoundStreamConfig.{name} must be positive, got {getattr(self, name)}")
    as_dtype(self.dtype), as_dtype(self.param_dtype)

  @property
  def sample_rate(self) -> int:
    return self.layout.acoustic_sample_rate

  @property
  def hop(self) -> int:
    return self.layout.acoustic_hop

  @property
  def frame_rate(self) -> int:
    return self.layout.frame_rate("acoustic")

  @property
  def num_levels(self) -> int:
    return self.layout.acoustic_levels

  @property
  def codebook_size(self) -> int:
    return self.layout.acoustic_codebook_size

  def bitrate(self, n_q: Optional[int] = None) -> float:
    """Bits per second with the first n_q levels: frame rate x n_q x log2(codebook size)."""
    n_q = self.num_levels if n_q is None else n_q
    return float(self.frame_rate * n_q * math.log2(self.codebook_size))

  def conv_kwargs(self) -> dict:
    return dict(dtype=as_dtype(self.dtype), param_dtype=as_dtype(self.param_dtype))


class ResidualUnit(nn.Module):
  """`[batch, time, channels] -> same`: x + Conv1x1(ELU(DilatedConv7(ELU(x)))).

  Pre-activation keeps the skip path an identity, which lets a stack without normalisation
  start close to the identity map."""
  config: SoundStreamConfig
  dilation: int

  @nn.compact
  def __call__(self, x):
    cfg, channels = self.config, x.shape[-1]
    h = Conv1D(channels, cfg.residual_kernel_size, dilation=self.dilation, name="dilated_conv",
               **cfg.conv_kwargs())(nn.elu(x))
    h = Conv1D(channels, 1, name="pointwise_conv", **cfg.conv_kwargs())(nn.elu(h))
    return x + h


class Encoder(nn.Module):
  """`[batch, samples] -> [batch, samples / hop, embedding_dim]`; samples % hop == 0."""
  config: SoundStreamConfig

  @nn.compact
  def __call__(self, wav):
    cfg, kw = self.config, self.config.conv_kwargs()
    x = Conv1D(cfg.channels, 7, name="input_conv", **kw)(wav[..., None])
    for i, stride in enumerate(cfg.strides):
      for dilation in cfg.dilations:
        x = ResidualUnit(cfg, dilation, name=f"block_{i}_residual_{dilation}")(x)
      # Kernel 2S, stride S: every sample is seen by two frames, the second being its own.
      x = Conv1D(cfg.channels * 2 ** (i + 1), 2 * stride, strides=stride,
                 name=f"block_{i}_downsample", **kw)(nn.elu(x))
    return Conv1D(cfg.embedding_dim, 3, name="output_conv", **kw)(nn.elu(x))


class Decoder(nn.Module):
  """`[batch, frames, embedding_dim] -> [batch, frames * hop]`, the encoder mirrored."""
  config: SoundStreamConfig

  @nn.compact
  def __call__(self, embeddings):
    cfg, kw = self.config, self.config.conv_kwargs()
    num_blocks = len(cfg.strides)
    x = Conv1D(cfg.channels * 2 ** num_blocks, 7, name="input_conv", **kw)(embeddings)
    for i, stride in enumerate(reversed(cfg.strides)):
      x = CausalConvTranspose1D(cfg.channels * 2 ** (num_blocks - 1 - i), 2 * stride, stride,
                                name=f"block_{i}_upsample", **kw)(nn.elu(x))
      for dilation in cfg.dilations:
        x = ResidualUnit(cfg, dilation, name=f"block_{i}_residual_{dilation}")(x)
    return Conv1D(1, 7, name="output_conv", **kw)(nn.elu(x))[..., 0]


class SoundStreamCodec(nn.Module):
  """The generator: encoder, residual vector quantizer, decoder.

  Methods (all take / return batch-major arrays; samples must be a multiple of hop — the
  `codec.Codec` API pads and trims for arbitrary lengths):
    __call__(wav [b, s], n_q=None, train=False) -> (wav_hat [b, s], aux)
    encode(wav [b, s], n_q=None) -> codes int32 [b, s / hop, n_q]
    decode(codes [b, frames, n_q]) -> wav [b, frames * hop]
  """
  config: SoundStreamConfig

  def setup(self):
    cfg = self.config
    self.encoder = Encoder(cfg)
    self.quantizer = rvq.ResidualVectorQuantizer(
        num_levels=cfg.num_levels, codebook_size=cfg.codebook_size, dim=cfg.embedding_dim,
        decay=cfg.ema_decay, dead_code_threshold=cfg.dead_code_threshold,
        kmeans_iters=cfg.kmeans_iters, quantizer_dropout_rate=cfg.quantizer_dropout_rate)
    self.decoder = Decoder(cfg)

  def _check(self, wav):
    if wav.ndim != 2:
      raise ValueError(f"SoundStream expects audio [batch, samples], got shape {wav.shape}")
    if wav.shape[1] % self.config.hop:
      raise ValueError(f"SoundStream input of {wav.shape[1]} samples is not a multiple of the "
                       f"hop {self.config.hop}; pad it (codec.Codec does) or crop the task")

  def __call__(self, wav, n_q: Optional[int] = None, *, train: bool = False):
    self._check(wav)
    quantized, codes, aux = self.quantizer(self.encoder(wav), n_q, train=train)
    return self.decoder(quantized), dict(aux, codes=codes)

  def encode(self, wav, n_q: Optional[int] = None):
    self._check(wav)
    return self.quantizer(self.encoder(wav), n_q, train=False)[1]

  def decode(self, codes):
    return self.decoder(self.quantizer.codes_to_vectors(codes))
