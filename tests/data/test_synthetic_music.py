"""The synthetic music corpus: generator, TFDS builder and raw-audio seqio tasks.

One tiny config (24 + 4 clips of 2 s at 16 kHz) is built once per module into a temp dir.
"""
import os

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from musiclm_jax.core import audio
from musiclm_jax.core import input_pipeline
from musiclm_jax.data import audio_tasks
from musiclm_jax.data import music_captions
from musiclm_jax.data import music_synth
from musiclm_jax.data import synthetic_music
from musiclm_jax.data import tfds_audio

tfds.disable_progress_bar()

RATE = 16000
SECONDS = 2.0
CONFIG = synthetic_music.SyntheticMusicConfig(
    name="test_24x2s", sample_rate=RATE, seconds=SECONDS, num_train=24, num_validation=4,
    seed=7)
AUDIO_TASK, PAIRS_TASK = audio_tasks.register_synthetic_music_tasks(CONFIG)
CROP = 8000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  synthetic_music.ensure_built(CONFIG, path)
  return path


@pytest.fixture
def tasks_dir(data_dir, monkeypatch):
  monkeypatch.setenv(audio_tasks.DATA_DIR_ENV, data_dir)
  return data_dir


def _read(task, batch_size=4, **kwargs):
  args = dict(mixture_or_task_name=task, task_feature_lengths={"audio": CROP}, split="train",
              batch_size=batch_size, feature_converter_cls=seqio.PassThroughFeatureConverter,
              shard_info=seqio.ShardInfo(0, 1))
  args.update(kwargs)
  return input_pipeline.get_dataset(**args)


# --- generator ------------------------------------------------------------------------------

def test_render_clip_is_deterministic_by_seed():
  wav, caption, attributes = music_synth.render_clip(3, 11, RATE, 1.0)
  again = music_synth.render_clip(3, 11, RATE, 1.0)
  np.testing.assert_array_equal(wav, again[0])
  assert (caption, attributes) == again[1:]
  assert wav.dtype == np.float32 and wav.shape == (RATE,)
  assert not np.array_equal(wav, music_synth.render_clip(3, 12, RATE, 1.0)[0])
  assert not np.array_equal(wav, music_synth.render_clip(4, 11, RATE, 1.0)[0])


def test_caption_names_exactly_the_clip_attributes():
  seen = {name: set() for name in music_captions.PHRASES}
  for index in range(300):
    attributes = music_synth.draw_attributes(index, seed=0)
    caption = music_captions.write_caption(attributes, np.random.default_rng(index))
    for name in music_captions.PHRASES:
      assert music_captions.phrases_found(caption, name) == {attributes[name]}, (name, caption)
      seen[name].add(attributes[name])
  # Every value of every attribute occurs: the check above covered the whole vocabulary.
  assert seen == {name: set(values) for name, values in music_captions.PHRASES.items()}


def test_clip_audio_matches_its_attributes():
  for index in range(12):
    wav, _, attributes = music_synth.render_clip(index, 0, RATE, 3.0)
    assert np.all(np.isfinite(wav)) and np.max(np.abs(wav)) <= 0.99 + 1e-6
    rms_db = 20 * np.log10(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    # Exactly the level, unless peak limiting had to pull it down.
    assert rms_db == pytest.approx(attributes["loudness_dbfs"], abs=0.1) or (
        rms_db < attributes["loudness_dbfs"] and np.max(np.abs(wav)) > 0.98)
    if attributes["drums"]:
      continue
    # Pitched energy sits on the key's scale (chance would be 7 / 12).
    power = np.abs(np.fft.rfft(wav)) ** 2
    hz = np.fft.rfftfreq(len(wav), 1 / RATE)
    keep = (hz > 30) & (hz < 4000)
    pitch_class = np.round(12 * np.log2(hz[keep] / 440) + 69).astype(int) % 12
    energy = np.bincount(pitch_class, weights=power[keep], minlength=12)
    scale = [(attributes["root_midi"] + step) % 12
             for step in music_synth.SCALES[attributes["mode"]]]
    assert energy[scale].sum() / energy.sum() > 0.85, attributes


def test_an_attribute_space_limits_the_draws_and_full_is_the_default():
  demo = [music_synth.draw_attributes(i, 0, music_synth.DEMO) for i in range(200)]
  assert {a["instrument"] for a in demo} == set(music_synth.DEMO.instruments)
  assert {a["register"] for a in demo} == {"low", "high"}
  assert {a["drums"] for a in demo} == {False, True}
  assert {(a["mode"], a["tempo_bpm"], a["loudness"]) for a in demo} == {("major", 110, "medium")}
  assert all(music_synth.draw_attributes(i, 0) == music_synth.draw_attributes(
      i, 0, music_synth.FULL) for i in range(50))
  wav, _, attributes = music_synth.render_clip(7, 0, RATE, 1.0, music_synth.DEMO)
  assert attributes == demo[7] and wav.shape == (RATE,)
  with pytest.raises(ValueError, match="AttributeSpace.instruments"):
    music_synth.AttributeSpace(instruments=("kazoo",))
  with pytest.raises(ValueError, match="tempo_bpm"):
    music_synth.AttributeSpace(tempo_bpm=(20, 30))


def test_demo_config_draws_from_the_demo_space():
  config = synthetic_music.config_by_name("demo")
  assert config.space == music_synth.DEMO and config.seconds == 4.0
  assert synthetic_music.config_by_name("tiny").space == music_synth.FULL
  assert {"synthetic_music_audio_demo", "synthetic_music_pairs_demo"} <= set(
      seqio.TaskRegistry.names())


def test_render_clip_rejects_nonpositive_sizes():
  with pytest.raises(ValueError, match="positive"):
    music_synth.render_clip(0, 0, RATE, 0.0)


# --- builder --------------------------------------------------------------------------------

def test_builder_writes_splits_features_and_the_rendered_clips(data_dir):
  train = list(tfds.load(f"synthetic_music/{CONFIG.name}:1.0.0", data_dir=data_dir,
                         split="train").as_numpy_iterator())
  validation = tfds.load(f"synthetic_music/{CONFIG.name}:1.0.0", data_dir=data_dir,
                         split="validation")
  assert len(train) == 24 and len(list(validation)) == 4
  assert sorted(ex["clip_index"] for ex in train) == list(range(24))
  assert sorted(ex["clip_index"] for ex in validation.as_numpy_iterator()) == [24, 25, 26, 27]
  for ex in train[:3]:
    wav, caption, attributes = music_synth.render_clip(int(ex["clip_index"]), CONFIG.seed, RATE,
                                                       SECONDS)
    assert ex["audio"].dtype == np.int16 and ex["audio"].shape == (int(RATE * SECONDS),)
    np.testing.assert_array_equal(ex["audio"], tfds_audio.to_pcm16(wav))
    assert ex["caption"].decode() == caption
    stored = {k: v.decode() if isinstance(v, bytes) else v.item()
              for k, v in ex["attributes"].items()}
    assert stored == pytest.approx(attributes)


def test_ensure_built_reuses_a_built_dataset(data_dir):
  info = os.path.join(data_dir, "synthetic_music", CONFIG.name, "1.0.0", "dataset_info.json")
  before = os.path.getmtime(info)
  builder = synthetic_music.ensure_built(CONFIG, data_dir)
  assert builder.is_prepared() and os.path.getmtime(info) == before


def test_unknown_config_name_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown synthetic_music config 'nope'"):
    synthetic_music.ensure_built("nope", "/nonexistent")


# --- seqio tasks ----------------------------------------------------------------------------

def test_registered_tasks_exist():
  for name in ("synthetic_music_audio_16k", "synthetic_music_audio_24k",
               "synthetic_music_pairs_16k"):
    assert name in seqio.TaskRegistry.names()


def test_audio_task_gives_loudness_normalised_crops(tasks_dir):
  batch = next(iter(_read(AUDIO_TASK)))
  assert set(batch) == {"audio"}
  wav = batch["audio"].numpy()
  assert wav.shape == (4, CROP) and wav.dtype == np.float32
  rms_db = 20 * np.log10(np.sqrt(np.mean(wav.astype(np.float64) ** 2, axis=1)))
  np.testing.assert_allclose(rms_db, audio_tasks.TARGET_DBFS, atol=0.01)


def test_pairs_task_keeps_caption_and_level(tasks_dir):
  captions = {music_synth.render_clip(i, CONFIG.seed, RATE, SECONDS)[1] for i in range(24)}
  batch = next(iter(_read(PAIRS_TASK)))
  assert {t.decode() for t in batch["text"].numpy()} <= captions
  levels = {-32.0, -24.0, -16.0}
  for wav in batch["audio"].numpy():
    rms_db = 20 * np.log10(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    assert min(abs(rms_db - level) for level in levels) < 6.0  # a crop, not the whole clip


def test_task_iterator_resumes_exactly_after_restore(tasks_dir, tmp_path):
  iterator = input_pipeline.DatasetIterator(_read(PAIRS_TASK))
  for _ in range(3):
    next(iterator)
  iterator.save(tmp_path / "iterator")
  expected = [next(iterator) for _ in range(8)]  # crosses an epoch boundary (24 clips)
  restored = input_pipeline.DatasetIterator(_read(PAIRS_TASK))
  restored.restore(tmp_path / "iterator")
  for want, got in zip(expected, (next(restored) for _ in range(8))):
    np.testing.assert_array_equal(want["audio"], got["audio"])
    np.testing.assert_array_equal(want["text"], got["text"])


def test_missing_crop_length_is_a_clear_error(tasks_dir):
  with pytest.raises(ValueError, match=r"task_feature_lengths\['audio'\]"):
    _read(AUDIO_TASK, task_feature_lengths={"inputs": 3})


def test_synthetic_source_builds_itself_on_first_read(tmp_path, monkeypatch):
  monkeypatch.setenv(audio_tasks.DATA_DIR_ENV, str(tmp_path))
  config = synthetic_music.SyntheticMusicConfig(name="test_autobuild", sample_rate=RATE,
                                                seconds=1.0, num_train=4, num_validation=1)
  audio_name, _ = audio_tasks.register_synthetic_music_tasks(config)
  batch = next(iter(_read(audio_name, batch_size=2, task_feature_lengths={"audio": 4000})))
  assert batch["audio"].shape == (2, 4000)
  assert os.path.exists(tmp_path / "synthetic_music" / "test_autobuild" / "1.0.0")


def test_unbuilt_dataset_error_names_the_directory(tmp_path, monkeypatch):
  monkeypatch.setenv(audio_tasks.DATA_DIR_ENV, str(tmp_path))
  source = audio_tasks.AudioTfdsSource("synthetic_music/never_built:1.0.0", splits=("train",))
  with pytest.raises(FileNotFoundError, match=f"not built in {tmp_path}"):
    source.get_dataset("train")


def test_data_dir_comes_from_gin_then_env_then_home(monkeypatch):
  monkeypatch.delenv(audio_tasks.DATA_DIR_ENV, raising=False)
  assert audio_tasks.tfds_data_dir() == os.path.expanduser("~/tensorflow_datasets")
  monkeypatch.setenv(audio_tasks.DATA_DIR_ENV, "/from/env")
  assert audio_tasks.tfds_data_dir() == "/from/env"
  assert audio_tasks.tfds_data_dir("/from/gin") == "/from/gin"


def test_tf_loudness_normalisation_matches_numpy():
  rng = np.random.default_rng(0)
  for wav in (0.3 * rng.standard_normal(1000), 1e-4 * rng.standard_normal(1000),
              np.zeros(1000)):
    wav = wav.astype(np.float32)
    got = audio_tasks.loudness_normalize_tf(tf.constant(wav)).numpy()
    np.testing.assert_allclose(got, audio.loudness_normalize(wav), rtol=1e-5, atol=1e-7)
