"""Audio in and out: load / resample / crop / loudness-normalise (numpy), and the STFT and
log-mel features every model shares (JAX, jit-able, batched).

librosa decodes and resamples (soxr_hq, one resampler for every path) and builds the mel
filterbank constant; the features themselves are our own JAX code (librosa is their reference
in tests).
"""
import os
import warnings
from typing import Optional

import jax.numpy as jnp
import numpy as np


class AudioError(ValueError):
  """A file or waveform that cannot be used; the message names the culprit."""


# --- numpy side: files and clips ------------------------------------------------------------

def load_audio(path, sample_rate: int, mono: bool = True) -> np.ndarray:
  """Float32 `[samples]` (mono) at `sample_rate`. Raises AudioError naming the file when it is
  missing, undecodable, empty or contains NaN/Inf."""
  import soundfile as sf

  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f"audio file not found: {path}")
  try:
    wav, file_rate = sf.read(path, dtype="float32", always_2d=True)
  except Exception as error:  # soundfile raises several types for corrupt data
    raise AudioError(f"cannot decode {path}: {error}") from error
  if wav.shape[0] == 0:
    raise AudioError(f"empty audio file: {path}")
  if not np.all(np.isfinite(wav)):
    raise AudioError(f"NaN/Inf samples in {path}")
  wav = wav.mean(axis=1) if mono else wav.T
  return np.ascontiguousarray(resample(wav, file_rate, sample_rate))


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
  """float32 `[..., samples]` from `from_rate` to `to_rate` (librosa's soxr_hq, each row on its
  own). Every path that turns audio into tokens resamples here, so a prompt clip is coded
  exactly as the cached training tokens were."""
  if from_rate == to_rate:
    return np.asarray(wav, np.float32)
  import librosa  # pylint: disable=import-outside-toplevel
  return librosa.resample(np.asarray(wav), orig_sr=from_rate, target_sr=to_rate,
                          res_type="soxr_hq").astype(np.float32)


def crop(wav: np.ndarray, num_samples: int, start: Optional[int] = None,
         rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """`[..., num_samples]` from `start`, a random start (rng), or 0. Shorter input is an error:
  padding would teach models silence."""
  length = wav.shape[-1]
  if length < num_samples:
    raise AudioError(f"clip of {length} samples is shorter than the crop of {num_samples}")
  if start is None:
    start = int(rng.integers(0, length - num_samples + 1)) if rng is not None else 0
  return wav[..., start:start + num_samples]


def loudness_normalize(wav: np.ndarray, target_dbfs: float = -20.0,
                       max_gain_db: float = 30.0) -> np.ndarray:
  """Scales to `target_dbfs` RMS (gain capped, so near-silence is not blown up into noise)."""
  rms = float(np.sqrt(np.mean(np.square(wav), dtype=np.float64)))
  if rms <= 0.0:
    return wav
  gain_db = min(target_dbfs - 20.0 * np.log10(rms), max_gain_db)
  return (wav * 10.0 ** (gain_db / 20.0)).astype(wav.dtype)


# --- JAX side: features ---------------------------------------------------------------------

def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: Optional[float] = None) -> np.ndarray:
  """`[n_fft // 2 + 1, n_mels]` triangular filters on Slaney's mel scale, area-normalised
  (librosa's default; float64 then float32, bit-equal to the hand-written one it replaced)."""
  import librosa  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    # SoundStream's 64- and 128-sample loss windows have fewer FFT bins than its 64 mels, so
    # some filters are empty there by design.
    warnings.filterwarnings("ignore", message="Empty filters detected")
    weights = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                  fmax=fmax, htk=False, norm="slaney", dtype=np.float64)
  return weights.T.astype(np.float32)


def stft(wav, n_fft: int, hop: int, win_length: Optional[int] = None, center: bool = True):
  """`[batch, samples] -> complex [batch, frames, n_fft // 2 + 1]`, periodic Hann window,
  reflect-padded by n_fft // 2 when centred (librosa's convention)."""
  win_length = win_length or n_fft
  if center:
    wav = jnp.pad(wav, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
  num_frames = 1 + (wav.shape[-1] - n_fft) // hop
  if num_frames < 1:
    raise AudioError(f"{wav.shape[-1]} samples are fewer than one STFT window of {n_fft}")
  index = np.arange(n_fft)[None, :] + hop * np.arange(num_frames)[:, None]
  window = np.zeros(n_fft, np.float32)
  offset = (n_fft - win_length) // 2
  window[offset:offset + win_length] = 0.5 - 0.5 * np.cos(
      2 * np.pi * np.arange(win_length) / win_length)
  frames = wav[:, index] * window
  return jnp.fft.rfft(frames, n=n_fft, axis=-1)


def log_mel_spectrogram(wav, sample_rate: int, n_fft: int = 400, hop: int = 160,
                        n_mels: int = 80, fmin: float = 0.0, fmax: Optional[float] = None,
                        win_length: Optional[int] = None, eps: float = 1e-5, center: bool = True):
  """`[batch, samples] -> [batch, frames, n_mels]` natural-log mel power spectrogram.

  Defaults: 25 ms window / 10 ms hop at 16 kHz, 80 mels (w2v-BERT's front end).
  """
  power = jnp.abs(stft(wav.astype(jnp.float32), n_fft, hop, win_length, center)) ** 2
  mel = power @ mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
  return jnp.log(mel + eps)
