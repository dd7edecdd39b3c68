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
  np.testing.assert_allclose(ours, librosa.filters.mel(sr=24000, n_fft=1024, n_mels=64).T,
                             atol=1e-6)


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
