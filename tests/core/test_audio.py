import warnings

import librosa
import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.core import audio


def _tone(seconds=0.5, rate=16000, hz=440.0):
  t = np.arange(int(seconds * rate)) / rate
  return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_log_mel_matches_librosa_reference():
  wav = _tone() + 0.01 * np.random.default_rng(0).standard_normal(8000).astype(np.float32)
  ours = np.asarray(audio.log_mel_spectrogram(wav[None], 16000, n_fft=400, hop=160, n_mels=80))[0]
  ref = librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=80,
                                       power=2.0, center=True, pad_mode="reflect")
  np.testing.assert_allclose(ours, np.log(ref.T + 1e-5), atol=2e-3)


def test_mel_filterbank_matches_librosa():
  ours = audio.mel_filterbank(24000, 1024, 64)
  assert ours.shape == (513, 64) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, librosa.filters.mel(sr=24000, n_fft=1024, n_mels=64).T,
                             atol=1e-6)


def test_mel_filterbank_of_the_codec_loss_s_shortest_window_does_not_warn():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    weights = audio.mel_filterbank(24000, 64, 64)  # 33 bins for 64 mels: empty filters
  assert weights.shape == (33, 64) and np.all(np.isfinite(weights))


def test_resample_is_soxr_hq_per_row_float32_and_the_identity_at_equal_rates():
  wav = np.stack([_tone(rate=24000), _tone(rate=24000, hz=220.0)])
  out = audio.resample(wav, 24000, 16000)
  assert out.shape == (2, 8000) and out.dtype == np.float32
  for row, resampled in zip(wav, out):  # what the tokenizing tasks do, one clip at a time
    np.testing.assert_array_equal(resampled, librosa.resample(
        row, orig_sr=24000, target_sr=16000, res_type="soxr_hq"))
  assert audio.resample(wav[0].astype(np.float64), 24000, 16000).dtype == np.float32
  same = audio.resample(wav.astype(np.float64), 16000, 16000)
  assert same.dtype == np.float32
  np.testing.assert_array_equal(same, wav)


def test_load_audio_resamples_downmixes_and_names_bad_files(tmp_path):
  stereo = np.stack([_tone(rate=24000), _tone(rate=24000)], axis=1)
  sf.write(tmp_path / "a.wav", stereo, 24000)
  wav = audio.load_audio(tmp_path / "a.wav", 16000)
  assert wav.ndim == 1 and abs(len(wav) - 8000) <= 1
  (tmp_path / "bad.mp3").write_bytes(b"not audio at all")
  with pytest.raises(audio.AudioError, match="bad.mp3"):
    audio.load_audio(tmp_path / "bad.mp3", 16000)
  with pytest.raises(audio.AudioError, match="missing.wav"):
    audio.load_audio(tmp_path / "missing.wav", 16000)


def test_crop_refuses_short_clips_and_loudness_hits_target():
  with pytest.raises(audio.AudioError, match="shorter"):
    audio.crop(np.zeros(10, np.float32), 20)
  out = audio.loudness_normalize(_tone(), target_dbfs=-20.0)
  assert abs(20 * np.log10(np.sqrt(np.mean(out ** 2))) + 20.0) < 1e-3
