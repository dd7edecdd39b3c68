"""Raw-audio seqio tasks over the audio TFDS builders: what the tokenizers train on.

Importing this module registers, for every builder config it knows:

  <dataset>_audio_<rate>   {"audio": float32 [sequence_length["audio"]]}, a random crop,
                           loudness-normalised (SoundStream, w2v-BERT)
  <dataset>_pairs_<rate>   {"audio": ..., "text": string} (MuLan's audio-text pairs; with
                           `tasks.caption_augmentation.rate`, captions cut to clauses,
                           some dropped, reordered: augment_captions)

e.g. `synthetic_music_audio_16k`, `synthetic_music_pairs_16k`, `fma_audio_small_24k`,
`musiccaps_pairs_16k`, `rendered_scores_pairs_demo`. Text is the synthetic or rendered-score
caption, FMA's `description` or MusicCaps' `caption`.
The crop length is the task feature length, in samples: `TASK_FEATURE_LENGTHS =
{"audio": 16000}` is one second at 16 kHz. Read them with
`seqio.PassThroughFeatureConverter` (it takes and ignores `pack=`).

Everything after the TFDS source is plain tf ops with seeds from
`seqio.map_over_dataset(num_seeds=1)`, so the input iterator stays checkpointable
(no py_function). The steps are public so the later tokenizing tasks can reuse them and
put a `seqio.CacheDatasetPlaceholder` where tokens, not audio, should be cached.

Data directory: gin `tasks.tfds_data_dir.data_dir`, else $MUSICLM_TFDS_DIR, else
~/tensorflow_datasets; resolved when a task is read, not when it is registered, so gin
bindings parsed after import still count. The synthetic set builds itself on first read.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Mapping, Optional

import gin
import jax
import seqio
import tensorflow as tf

from musiclm_jax.data import fma
from musiclm_jax.data import musiccaps
from musiclm_jax.data import rendered_scores
from musiclm_jax.data import synthetic_music
from musiclm_jax.data import tfds_audio

DATA_DIR_ENV = "MUSICLM_TFDS_DIR"
# The shuffle buffer is saved in every data-iterator checkpoint, so it holds crops (not
# clips) and stays small; file-level shuffling in TFDS does the rest.
SHUFFLE_BUFFER_SIZE = 128
# audio.loudness_normalize's defaults: -20 dBFS RMS, at most 30 dB of gain.
TARGET_DBFS = -20.0
MAX_GAIN_DB = 30.0
_PASS_THROUGH = seqio.PassThroughVocabulary(size=0)
AUDIO_FEATURE = seqio.Feature(_PASS_THROUGH, add_eos=False, dtype=tf.float32, rank=1)
TEXT_FEATURE = seqio.Feature(_PASS_THROUGH, add_eos=False, dtype=tf.string, rank=0)


@gin.configurable(module="tasks")
def tfds_data_dir(data_dir: Optional[str] = None) -> str:
  """Where the audio TFDS datasets live: the binding, $MUSICLM_TFDS_DIR, ~/tensorflow_datasets."""
  data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets"
  return os.path.expanduser(data_dir)


class AudioTfdsSource(seqio.TfdsDataSource):
  """A TFDS source for audio: lazy data dir, no network, no in-memory cache.

  prepare: called with the data dir when the dataset is not built there (the synthetic
    set builds itself); None means the error says how to build it.
  """

  def __init__(self, tfds_name: str, splits, prepare: Optional[Callable[[str], None]] = None):
    # read_only: seqio would otherwise call tfds.load(try_gcs=True), which needs network.
    super().__init__(tfds_name=tfds_name, splits=splits, read_only=True)
    self.tfds_name = tfds_name
    self._prepare = prepare

  @property
  def tfds_dataset(self) -> seqio.utils.LazyTfdsLoader:
    loader = super().tfds_dataset
    # seqio's own override (cache_tasks_main --tfds_data_dir) wins over ours.
    if not seqio.utils._get_data_dir_override(loader.name):  # pylint: disable=protected-access
      loader.override_data_dir(tfds_data_dir())
    return loader

  def _is_prepared(self, data_dir: str) -> bool:
    # TFDS's layout, checked on disk: asking tfds.builder about an unregistered config
    # that is not built yet raises instead of answering.
    name, version = self.tfds_dataset.name.split(":")
    return tf.io.gfile.exists(os.path.join(data_dir, name, version, "dataset_info.json"))

  def _ensure_prepared(self) -> None:
    loader = self.tfds_dataset
    data_dir = loader.data_dir
    if self._is_prepared(data_dir):
      return
    if self._prepare is None:
      raise FileNotFoundError(
          f"TFDS dataset {loader.name} is not built in {data_dir}. Build it first (see "
          f"docs/data.md: python -m musiclm_jax.build_data ...), or point the data dir at a "
          f"built copy: --gin.tasks.tfds_data_dir.data_dir=... or ${DATA_DIR_ENV}.")
    if jax.process_count() > 1:
      # Concurrent builds into one directory would race on the final rename.
      raise FileNotFoundError(
          f"TFDS dataset {loader.name} is not built in {data_dir}; with "
          f"{jax.process_count()} processes, build it once beforehand "
          "(musiclm_jax.data.synthetic_music.ensure_built).")
    self._prepare(data_dir)
    # A builder memoised before the build knows no splits; forget it.
    seqio.utils.LazyTfdsLoader._MEMOIZED_BUILDERS.pop(  # pylint: disable=protected-access
        (loader.name, data_dir), None)

  def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
    self._ensure_prepared()
    return super().get_dataset(split=split, shuffle=shuffle, seed=seed, shard_info=shard_info,
                               **kwargs)

  def list_shards(self, split: str):
    self._ensure_prepared()
    return super().list_shards(split)

  def num_input_examples(self, split: str) -> Optional[int]:
    # Unknown on purpose: seqio caches any source of under 10,000 examples in memory,
    # which for audio is gigabytes per host (10k clips of 10 s at 16 kHz: 3.2 GB of int16).
    del split
    return None


# --- preprocessors (plain tf ops: checkpointable) ---------------------------------------------

def select_audio(dataset: tf.data.Dataset, text_key: Optional[str] = None) -> tf.data.Dataset:
  """{"audio": int16 PCM, ...} -> {"audio": float32 [-1, 1) (, "text": ex[text_key])}."""

  @seqio.map_over_dataset
  def select(ex):
    out = {"audio": tf.cast(ex["audio"], tf.float32) / tfds_audio.PCM_SCALE}
    if text_key is not None:
      out["text"] = ex[text_key]
    return out

  return select(dataset)


def _crop_length(sequence_length: Optional[Mapping[str, int]]) -> int:
  if not sequence_length or not sequence_length.get("audio"):
    raise ValueError(f"raw-audio tasks need the crop length in samples as "
                     f"task_feature_lengths['audio'], got {sequence_length}")
  return int(sequence_length["audio"])


def random_crop_audio(dataset: tf.data.Dataset,
                      sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """A uniformly placed crop of sequence_length["audio"] samples; shorter clips are dropped.

  Dropped, not padded: padding would teach the models silence (see audio.crop). The
  builders already leave out clips under their config's min_seconds and record them.
  """
  length = _crop_length(sequence_length)
  dataset = dataset.filter(lambda ex: tf.shape(ex["audio"])[0] >= length)

  @seqio.map_over_dataset(num_seeds=1)
  def crop(ex, seed):
    max_start = tf.shape(ex["audio"])[0] - length
    start = tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)
    ex = dict(ex)
    ex["audio"] = tf.ensure_shape(ex["audio"][start:start + length], [length])
    return ex

  return crop(dataset)


def loudness_normalize_tf(wav: tf.Tensor, target_dbfs: float = TARGET_DBFS,
                          max_gain_db: float = MAX_GAIN_DB) -> tf.Tensor:
  """tf twin of musiclm_jax.core.audio.loudness_normalize (same formula, same cap)."""
  rms = tf.sqrt(tf.reduce_mean(tf.square(tf.cast(wav, tf.float64))))
  gain_db = tf.minimum(target_dbfs - 20.0 * tf.math.log(rms) / tf.math.log(
      tf.constant(10.0, tf.float64)), max_gain_db)
  scaled = wav * tf.cast(10.0 ** (gain_db / 20.0), wav.dtype)
  return tf.where(rms > 0.0, scaled, wav)  # silence stays silence (and gain_db is inf)


def normalize_loudness(dataset: tf.data.Dataset, target_dbfs: float = TARGET_DBFS,
                       max_gain_db: float = MAX_GAIN_DB) -> tf.data.Dataset:

  @seqio.map_over_dataset
  def normalize(ex):
    ex = dict(ex)
    ex["audio"] = loudness_normalize_tf(ex["audio"], target_dbfs, max_gain_db)
    return ex

  return normalize(dataset)


@gin.configurable(module="tasks")
def caption_augmentation(rate: float = 0.0, clause_keep_rate: float = 0.6) -> tuple[float, float]:
  """For gin: the share of pair examples whose caption is rewritten by `augment_captions`, and
  the chance each of its clauses survives. Read when a task is read (like tfds_data_dir)."""
  if not 0.0 <= rate <= 1.0 or not 0.0 < clause_keep_rate <= 1.0:
    raise ValueError(f"tasks.caption_augmentation: rate must be in [0, 1] and clause_keep_rate "
                     f"in (0, 1], got {rate} and {clause_keep_rate}")
  return rate, clause_keep_rate


def augment_captions(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """Attribute dropout and reordering for any caption: at `caption_augmentation()`'s rate, the
  caption is cut at , ; : . into clauses, each kept at clause_keep_rate (at least one), and the
  kept ones joined in a random order. A text tower then meets each clause's words without the
  rest of the sentence around them, as a prompt worded unlike the captions presents them."""
  rate, keep_rate = caption_augmentation()
  if not rate:
    return dataset

  @seqio.map_over_dataset(num_seeds=3)
  def augment(ex, seeds):
    text = ex["text"]
    clauses = tf.strings.strip(tf.strings.split(
        tf.strings.regex_replace(text, r"[,;:.]", "\x00"), "\x00"))
    clauses = tf.boolean_mask(clauses, tf.strings.length(clauses) > 0)
    n = tf.size(clauses)
    kept = tf.random.stateless_uniform([n], seeds[0]) < keep_rate
    # Never all of them dropped: then one clause, chosen at random, stays.
    one = tf.one_hot(tf.random.stateless_uniform([], seeds[0], 0, tf.maximum(n, 1), tf.int32),
                     n, on_value=True, off_value=False)
    kept = tf.where(tf.reduce_any(kept), kept, one)
    order = tf.argsort(tf.random.stateless_uniform([n], seeds[1]))
    shuffled = tf.gather(clauses, order)
    rewritten = tf.strings.reduce_join(tf.boolean_mask(shuffled, tf.gather(kept, order)),
                                       separator=", ") + "."
    use = (tf.random.stateless_uniform([], seeds[2]) < rate) & (n > 0)
    ex = dict(ex)
    ex["text"] = tf.where(use, rewritten, text)
    return ex

  return augment(dataset)


# --- registration -----------------------------------------------------------------------------

_REGISTERED: dict[str, tuple] = {}


def add_audio_task(name: str, source: seqio.DataSource, text_key: Optional[str] = None,
                   normalize: bool = True,
                   shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE) -> str:
  """Registers a raw-audio (text_key None) or audio-text pair task; idempotent."""
  # Not repr(source): a TFDS source's repr includes the data dir, which may change.
  config = (getattr(source, "tfds_name", repr(source)), tuple(source.splits), text_key,
            normalize, shuffle_buffer_size)
  if name in _REGISTERED and _REGISTERED[name] != config:
    raise ValueError(f"seqio task {name!r} is already registered with a different source "
                     f"or options: {_REGISTERED[name]} vs {config}")
  _REGISTERED[name] = config
  if name in seqio.TaskRegistry.names():
    return name
  preprocessors = [functools.partial(select_audio, text_key=text_key), random_crop_audio]
  if normalize:
    preprocessors.append(normalize_loudness)
  if text_key is not None:
    preprocessors.append(augment_captions)
  features = {"audio": AUDIO_FEATURE}
  if text_key is not None:
    features["text"] = TEXT_FEATURE
  seqio.TaskRegistry.add(name, source=source, preprocessors=preprocessors,
                         output_features=features, shuffle_buffer_size=shuffle_buffer_size)
  return name


def register_dataset_tasks(dataset: str, config_name: str, splits, text_key: str,
                           version: str = "1.0.0", prepare=None,
                           normalize_pairs: bool = True) -> tuple[str, str]:
  """<dataset>_audio_<config> and <dataset>_pairs_<config> over one built TFDS config."""
  source = AudioTfdsSource(f"{dataset}/{config_name}:{version}", splits=splits,
                           prepare=prepare)
  return (add_audio_task(f"{dataset}_audio_{config_name}", source),
          add_audio_task(f"{dataset}_pairs_{config_name}", source, text_key=text_key,
                         normalize=normalize_pairs))


def register_synthetic_music_tasks(config) -> tuple[str, str]:
  """The tasks of a synthetic_music config (a registered name or a SyntheticMusicConfig).

  The set builds itself on first read. The pairs keep their level: the captions name the
  loudness, so normalising it away would make those words unlearnable.
  """
  if isinstance(config, str):
    config = synthetic_music.config_by_name(config)
  return register_dataset_tasks(
      synthetic_music.NAME, config.name, ("train", "validation"), text_key="caption",
      version=synthetic_music.VERSION, normalize_pairs=False,
      prepare=lambda data_dir: synthetic_music.ensure_built(config, data_dir))


def register_rendered_scores_tasks(config) -> tuple[str, str]:
  """The tasks of a rendered_scores config (a registered name or a RenderedScoresConfig); the
  set builds itself on first read, like the synthetic one (offline and deterministic)."""
  if isinstance(config, str):
    config = rendered_scores.config_by_name(config)
  return register_dataset_tasks(
      rendered_scores.NAME, config.name, rendered_scores.SPLITS, text_key="caption",
      version=rendered_scores.VERSION,
      prepare=lambda data_dir: rendered_scores.ensure_built(config, data_dir))


def register_fma_tasks(config_name: str) -> tuple[str, str]:
  return register_dataset_tasks(fma.NAME, config_name, tuple(fma.SPLITS.values()),
                                text_key="description", version=fma.VERSION)


def register_musiccaps_tasks(config_name: str) -> tuple[str, str]:
  return register_dataset_tasks(musiccaps.NAME, config_name, ("train", "eval"),
                                text_key="caption", version=musiccaps.VERSION)


for _config in synthetic_music.BUILDER_CONFIGS:
  register_synthetic_music_tasks(_config)
for _config in rendered_scores.BUILDER_CONFIGS:
  register_rendered_scores_tasks(_config)
for _config in fma.BUILDER_CONFIGS:
  register_fma_tasks(_config.name)
for _config in musiccaps.BUILDER_CONFIGS:
  register_musiccaps_tasks(_config.name)
