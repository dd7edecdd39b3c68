"""Reconstruction metrics of a neural audio codec, logged at SoundStream's eval: SI-SNR,
multi-scale log-mel distance, and the bitrate the codes cost.

All take `reference, estimate [batch, samples]` (time-aligned: the codec is causal with no
delay) and return one value per example, so callers choose how to average.
"""
import math
from typing import Sequence

import jax.numpy as jnp

from musiclm_jax.codec.codec_losses import MEL_WINDOWS, NUM_MELS, mel_spectrogram


def si_snr(reference, estimate, eps: float = 1e-8):
  """Scale-invariant signal-to-noise ratio in dB, `[batch]` (Le Roux et al., 2019).

  Both signals are made zero-mean and the estimate is projected on the reference, so a gain
  or DC offset in the decoder is not counted as error; higher is better, 0 dB means the error
  is as loud as the signal.
  """
  reference = reference - jnp.mean(reference, axis=-1, keepdims=True)
  estimate = estimate - jnp.mean(estimate, axis=-1, keepdims=True)
  scale = (jnp.sum(reference * estimate, axis=-1, keepdims=True)
           / (jnp.sum(jnp.square(reference), axis=-1, keepdims=True) + eps))
  target = scale * reference
  noise = estimate - target
  ratio = (jnp.sum(jnp.square(target), axis=-1) + eps) / (jnp.sum(jnp.square(noise), axis=-1) + eps)
  return 10.0 * jnp.log10(ratio)


def mel_distance(reference, estimate, sample_rate: int, windows: Sequence[int] = MEL_WINDOWS,
                 num_mels: int = NUM_MELS, eps: float = 1e-5):
  """Mean absolute difference of natural-log mel magnitudes, averaged over the windows
  (hop window / 4) of the reconstruction loss, `[batch]`; 0 for identical signals."""
  distances = []
  for window in windows:
    ref = jnp.log(mel_spectrogram(reference, sample_rate, window, num_mels) + eps)
    est = jnp.log(mel_spectrogram(estimate, sample_rate, window, num_mels) + eps)
    distances.append(jnp.mean(jnp.abs(ref - est), axis=(1, 2)))
  return sum(distances) / len(distances)


def bitrate(frame_rate: float, num_levels: int, codebook_size: int) -> float:
  """Bits per second of RVQ codes without entropy coding: frame_rate x levels x log2(size)."""
  return float(frame_rate * num_levels * math.log2(codebook_size))
