"""SoundStream's training losses (Sec. 3.5): hinge adversarial, L1 feature matching and the
multi-scale mel reconstruction loss; and the waveform terms later codecs add (EnCodec's
time-domain L1, Parallel WaveGAN's multi-resolution STFT loss), which tie the reconstruction's
phase to the input's: the mel loss alone leaves it free.

Discriminator outputs are lists over discriminators k of `(logits [b, T_k], features)`,
features a list over layers l of `[b, T_kl, ...]` activations.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.core import audio

# Windows 2^6 .. 2^11 (Sec. 3.5): short windows resolve transients, long ones pitch.
MEL_WINDOWS = tuple(2 ** i for i in range(6, 12))
NUM_MELS = 64


def _mean_over(values: Sequence[jax.Array]) -> jax.Array:
  return sum(values) / len(values)


def hinge_discriminator_loss(real_outputs, fake_outputs) -> jax.Array:
  """Mean over discriminators of E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(x)))]."""
  return _mean_over([jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))
                     for (real, _), (fake, _) in zip(real_outputs, fake_outputs)])


def hinge_generator_loss(fake_outputs) -> jax.Array:
  """Mean over discriminators of E[max(0, 1 - D(G(x)))] (the paper's generator hinge)."""
  return _mean_over([jnp.mean(jax.nn.relu(1.0 - fake)) for fake, _ in fake_outputs])


def feature_matching_loss(real_outputs, fake_outputs) -> jax.Array:
  """Mean over discriminators and layers of the mean |D_l(x) - D_l(G(x))|; the real side is a
  target (no gradient)."""
  return _mean_over([
      jnp.mean(jnp.abs(jax.lax.stop_gradient(real) - fake))
      for (_, real_features), (_, fake_features) in zip(real_outputs, fake_outputs)
      for real, fake in zip(real_features, fake_features)])


def mel_spectrogram(wav, sample_rate: int, window: int, num_mels: int = NUM_MELS):
  """`[batch, samples] -> [batch, frames, num_mels]` mel *magnitude* spectrogram, hop window/4.

  The magnitude gets a small epsilon inside the square root: |z| has no gradient at z = 0,
  which silent input (or a decoder that outputs exact zeros) would otherwise hit.
  """
  spectrum = audio.stft(wav.astype(jnp.float32), window, window // 4)
  magnitude = jnp.sqrt(jnp.square(spectrum.real) + jnp.square(spectrum.imag) + 1e-10)
  return magnitude @ audio.mel_filterbank(sample_rate, window, num_mels)


def multiscale_mel_loss(reference, estimate, sample_rate: int,
                        windows: Sequence[int] = MEL_WINDOWS, num_mels: int = NUM_MELS,
                        eps: float = 1e-5) -> jax.Array:
  """Sum over window lengths s of  E_t ||S_t^s(x) - S_t^s(G(x))||_1
  + alpha_s E_t ||log S_t^s(x) - log S_t^s(G(x))||_2,  alpha_s = sqrt(s / 2).

  The paper sums over frames; we average over frames (and the batch), so the loss does not
  grow with the crop length and scales with more frames are not weighted up.
  """
  total = 0.0
  for window in windows:
    ref = jax.lax.stop_gradient(mel_spectrogram(reference, sample_rate, window, num_mels))
    est = mel_spectrogram(estimate, sample_rate, window, num_mels)
    linear = jnp.mean(jnp.sum(jnp.abs(ref - est), axis=-1))
    log_diff = jnp.log(ref + eps) - jnp.log(est + eps)
    # The epsilon keeps the norm's gradient finite where the two spectra agree exactly.
    log_l2 = jnp.mean(jnp.sqrt(jnp.sum(jnp.square(log_diff), axis=-1) + 1e-8))
    total = total + linear + np.sqrt(window / 2.0) * log_l2
  return total


def waveform_l1_loss(reference, estimate) -> jax.Array:
  """Mean |x - G(x)| over samples: the time-domain term (EnCodec, Sec. 3.4)."""
  return jnp.mean(jnp.abs(jax.lax.stop_gradient(reference) - estimate))


# Parallel WaveGAN's three resolutions (FFT size, hop) at 24 kHz, halved for 16 kHz audio by
# the caller when it wants the same durations; the tiny codec uses them as they are.
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))


def multiresolution_stft_loss(reference, estimate, resolutions=STFT_RESOLUTIONS,
                              eps: float = 1e-7) -> jax.Array:
  """Mean over resolutions of spectral convergence ||S(x) - S(G(x))||_F / ||S(x)||_F plus
  the mean |log S(x) - log S(G(x))| of linear STFT magnitudes (Yamamoto et al., 2020)."""
  total = 0.0
  for n_fft, hop in resolutions:
    ref = jax.lax.stop_gradient(_magnitude(reference, n_fft, hop))
    est = _magnitude(estimate, n_fft, hop)
    convergence = (jnp.sqrt(jnp.sum(jnp.square(ref - est), axis=(-2, -1)) + eps)
                   / jnp.sqrt(jnp.sum(jnp.square(ref), axis=(-2, -1)) + eps))
    log_magnitude = jnp.mean(jnp.abs(jnp.log(ref + eps) - jnp.log(est + eps)), axis=(-2, -1))
    total = total + jnp.mean(convergence + log_magnitude)
  return total / len(resolutions)


def _magnitude(wav, n_fft: int, hop: int):
  spectrum = audio.stft(wav.astype(jnp.float32), n_fft, hop)
  # As in mel_spectrogram: |z| has no gradient at 0 without the epsilon.
  return jnp.sqrt(jnp.square(spectrum.real) + jnp.square(spectrum.imag) + 1e-10)
