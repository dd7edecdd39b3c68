"""Bad input never stops a build: each kind of broken clip is skipped, recorded with its file
and reason, and every good clip still comes out. Built once as a MusicCaps-style tree (its
builder takes wav / flac / mp3); FMA's own bad files are covered in test_fma.py."""
import logging
import os
import wave

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from musiclm_jax.core import input_pipeline
from musiclm_jax.data import audio_tasks
from musiclm_jax.data import musiccaps
from musiclm_jax.data import tfds_audio
from tests import fixtures_audio as fx

tfds.disable_progress_bar()
RATE = 16000
CONFIG = musiccaps.MusicCapsConfig(name="bad_input_test", sample_rate=RATE,
                                   min_seconds=fx.MIN_SECONDS)
AUDIO_TASK, _ = audio_tasks.register_musiccaps_tasks(CONFIG.name)
GOOD = {"good", "fits_no_crop", "rate_8k", "stereo_48k"}


def _write_clips(audio_dir):
  fx.write_audio(f"{audio_dir}/good.wav", fx.tone(3.0, RATE), RATE)
  fx.write_audio(f"{audio_dir}/fits_no_crop.wav", fx.tone(2.5, RATE), RATE)
  fx.write_audio(f"{audio_dir}/rate_8k.wav", fx.tone(3.0, 8000), 8000)
  fx.write_audio(f"{audio_dir}/stereo_48k.flac", fx.tone(3.0, 48000, channels=2), 48000)
  fx.write_bytes(f"{audio_dir}/corrupt.mp3", fx.corrupt_bytes())
  fx.write_bytes(f"{audio_dir}/zero.wav", b"")
  with wave.open(f"{audio_dir}/header_only.wav", "wb") as f:  # a valid header, no samples
    f.setnchannels(1), f.setsampwidth(2), f.setframerate(RATE)
  for name, value in (("nan", np.nan), ("inf", np.inf)):
    wav = fx.tone(3.0, RATE)
    wav[100] = value
    fx.write_audio(f"{audio_dir}/{name}.wav", wav, RATE, subtype="FLOAT")
  fx.write_audio(f"{audio_dir}/short.mp3", fx.tone(fx.SHORT_SECONDS, RATE), RATE, fmt="MP3")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  manual = str(tmp_path_factory.mktemp("manual"))
  _write_clips(os.path.join(manual, "audio"))
  ytids = sorted(GOOD | {"corrupt", "zero", "header_only", "nan", "inf", "short"})
  fx.write_musiccaps_csv(manual, [{"ytid": y} for y in ytids])
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  tfds_audio.prepare(musiccaps.Musiccaps(config=CONFIG, data_dir=data_dir), manual)
  return data_dir


@pytest.fixture(scope="module")
def built(data_dir):
  return tfds.builder(f"musiccaps/{CONFIG.name}:1.0.0", data_dir=data_dir)


@pytest.fixture(scope="module")
def skipped(built):
  return {entry["id"]: entry for entry in built.info.metadata["skipped"]}


def _clips(built):
  return {ex["ytid"].decode(): ex["audio"]
          for ex in built.as_dataset(split="train").as_numpy_iterator()}


def _assert_skipped(skipped, ytid, reason, extension):
  entry = skipped[ytid]
  assert entry["reason"] == reason
  assert entry["file"].endswith(os.path.join("audio", ytid + extension))
  assert entry["file"] in entry["message"]  # the message names the file too


def test_corrupt_mp3_is_skipped_as_undecodable(skipped):
  _assert_skipped(skipped, "corrupt", "undecodable", ".mp3")


def test_zero_length_file_is_skipped_as_empty(skipped):
  _assert_skipped(skipped, "zero", "empty", ".wav")


def test_wav_header_without_samples_is_skipped_as_empty(skipped):
  _assert_skipped(skipped, "header_only", "empty", ".wav")


def test_nan_and_inf_samples_are_skipped(skipped):
  _assert_skipped(skipped, "nan", "non_finite", ".wav")
  _assert_skipped(skipped, "inf", "non_finite", ".wav")


def test_clip_under_min_seconds_is_skipped_as_too_short(skipped):
  _assert_skipped(skipped, "short", "too_short", ".mp3")
  assert f"{fx.MIN_SECONDS} s minimum" in skipped["short"]["message"]


def test_skips_are_counted(built):
  assert built.info.metadata["skipped_counts"] == {
      "undecodable": 1, "empty": 2, "non_finite": 2, "too_short": 1}


def test_every_good_clip_comes_out(built):
  assert set(_clips(built)) == GOOD
  assert built.info.metadata["present_ytids"]["train"] == sorted(GOOD)


def test_wrong_sample_rate_is_resampled_not_skipped(built):
  assert _clips(built)["rate_8k"].shape == (3 * RATE,)


def test_stereo_is_downmixed_not_skipped(built):
  wav = tfds_audio.pcm_to_float(_clips(built)["stereo_48k"])
  assert wav.shape == (3 * RATE,)
  assert np.sqrt(np.mean(wav ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.02)


def _task_clips(crop_samples):
  ds = input_pipeline.get_dataset(
      AUDIO_TASK, {"audio": crop_samples}, "train", batch_size=1,
      feature_converter_cls=seqio.PassThroughFeatureConverter, shuffle=False, num_epochs=1,
      shard_info=seqio.ShardInfo(0, 1), drop_remainder=False)
  return [batch["audio"].shape for batch in ds.as_numpy_iterator()]


def test_clips_shorter_than_the_crop_are_dropped_by_the_task(data_dir, monkeypatch):
  monkeypatch.setenv(audio_tasks.DATA_DIR_ENV, data_dir)
  assert _task_clips(int(2.4 * RATE)) == [(1, int(2.4 * RATE))] * 4
  # fits_no_crop has 2.5 s: a 2.8 s crop leaves it out and keeps the other three.
  assert _task_clips(int(2.8 * RATE)) == [(1, int(2.8 * RATE))] * 3


def test_a_skip_is_logged_with_its_file(caplog):
  log = tfds_audio.SkipLog("test")
  with caplog.at_level(logging.WARNING):
    log.skip("train", "x", "/data/x.mp3", tfds_audio.MISSING)
  assert "/data/x.mp3" in caplog.text and "missing" in caplog.text
  assert log.counts() == {"missing": 1}
