"""Tiny SoundStream configurations and synthetic tone batches shared by the codec tests."""
import jax
import numpy as np
import tensorflow as tf

from musiclm_jax.stages import token_layout
from musiclm_jax.codec.discriminators import DiscriminatorConfig
from musiclm_jax.codec.soundstream import SoundStreamConfig
from musiclm_jax.codec.soundstream_gan import SoundStream
from musiclm_jax.data.synthetic_tones import tone_clip

RATE = token_layout.TINY.acoustic_sample_rate   # 16 kHz, hop 320 -> 50 Hz, 4 levels x 64 codes


def tiny_config(**overrides) -> SoundStreamConfig:
  """What musiclm_jax/gin/models/soundstream/tiny.gin builds."""
  kwargs = dict(layout=token_layout.TINY, strides=(2, 4, 5, 8), channels=4, embedding_dim=32,
                dead_code_threshold=0.5)
  kwargs.update(overrides)
  return SoundStreamConfig(**kwargs)


def tiny_discriminators() -> DiscriminatorConfig:
  return DiscriminatorConfig(stft_window=256, stft_hop=64, stft_channels=4, stft_multipliers=(2, 4),
                             wave_channels=4, wave_downsample_channels=(8, 16), wave_groups=(1, 1),
                             wave_final_channels=16)


def tiny_model(**overrides) -> SoundStream:
  return SoundStream(tiny_config(), tiny_discriminators(), **overrides)


def tones(batch: int, samples: int, split_seed: int = 0, first: int = 0) -> np.ndarray:
  """float32 `[batch, samples]`: clips first .. first + batch - 1 of the synthetic tone task."""
  return np.stack([tone_clip(tf.constant([split_seed, first + i], tf.int64), RATE, samples).numpy()
                   for i in range(batch)])


def key(seed: int = 0):
  """A PRNG key for tests: XLA's RngBitGenerator compiles ~3x faster on CPU than threefry,
  which dominated initialising a codec (dozens of kernels, each drawn with its own key)."""
  return jax.random.key(seed, impl="rbg")
