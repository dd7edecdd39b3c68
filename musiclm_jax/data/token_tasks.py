"""Tokenizing tasks: audio clips -> the token streams the stage tasks read, cached once by seqio.

Importing this module registers, for every audio builder config,

  <dataset>_tokens_<config>            {"mulan": [Lm], "semantic": [Ts], "acoustic": [Ta, Q],
                                        "id": clip id, "tokenizers": which tokenizers made them,
                                        captioned sets also "mulan_text": [Lm], the caption's
                                        MuLan codes (stage_tasks.mulan_text_conditioning)}
  <dataset>_tokens_<config>_<stage>    the stage tasks over it (stage_tasks.py), + `_eval`

e.g. `synthetic_music_tokens_tiny` (tiny token layout), `fma_tokens_small_24k`,
`musiccaps_tokens_24k` (paper layout). A tokenizing task runs the frozen tokenizers
(musiclm_jax/data/music_tokenizers.py) and then `seqio.CacheDatasetPlaceholder(required=True)`: it
is only ever read from the cache that `python -m seqio.scripts.cache_tasks_main` writes.

Which tokenizers: gin binds them (musiclm_jax/gin/tasks/<dataset>_tokens.gin). cache_tasks_main takes no
gin flags, so importing this module parses the gin files named in $MUSICLM_TOKENIZERS_GIN
(comma-separated; relative names are looked up in the repository's gin/ folder), then the
bindings in $MUSICLM_TOKENIZERS_GIN_BINDINGS (`;`-separated), e.g.
`SOUNDSTREAM_DIR='/models/soundstream'; W2V_BERT_DIR='...'; MULAN_DIR='...'`. Every cached
clip carries the tokenizers' fingerprint; a reader with tokenizers configured refuses a cache
made by others. Readers find caches in seqio's global cache dirs, to which this module adds
$MUSICLM_SEQIO_CACHE_DIR and the gin binding `tasks.seqio_cache_dirs.cache_dirs`.

Bad clips never stop a cache run: empty, NaN/Inf, silent and too-short clips (shorter than
the longest stage crop) are skipped, logged with their id and counted (`skipped_counts()`).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
import threading
from typing import Callable, Mapping, Optional, Sequence

import gin
import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from musiclm_jax.data import music_tokenizers
from musiclm_jax.stages import token_layout
from musiclm_jax.data import audio_tasks, fma, musiccaps, stage_tasks, synthetic_music, tfds_audio
from musiclm_jax.data import rendered_scores
from musiclm_jax.data.synthetic_tokens import token_stream_features

TOKENIZERS_GIN_ENV = "MUSICLM_TOKENIZERS_GIN"
TOKENIZERS_BINDINGS_ENV = "MUSICLM_TOKENIZERS_GIN_BINDINGS"
CACHE_DIR_ENV = "MUSICLM_SEQIO_CACHE_DIR"
# Skip reasons, beside tfds_audio's (which the builders already applied to files).
EMPTY, NON_FINITE, TOO_SHORT = tfds_audio.EMPTY, tfds_audio.NON_FINITE, tfds_audio.TOO_SHORT
SILENT = "silent"
UNTOKENIZABLE = "untokenizable"
_STRING = seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False, dtype=tf.string,
                        rank=0)


# --- configuration ------------------------------------------------------------------------------

_PARSED_FROM_ENV: list[str] = []


def parse_tokenizers_gin_from_env() -> list[str]:
  """Parses $MUSICLM_TOKENIZERS_GIN's files, then $MUSICLM_TOKENIZERS_GIN_BINDINGS' bindings
  (one per line or `;`-separated), once per process; returns what it parsed."""
  files = [n.strip() for n in os.environ.get(TOKENIZERS_GIN_ENV, "").split(",") if n.strip()]
  bindings = [b.strip() for b in os.environ.get(TOKENIZERS_BINDINGS_ENV, "").replace(
      ";", "\n").splitlines() if b.strip()]
  if (files or bindings) and not _PARSED_FROM_ENV:
    from musiclm_jax.core import gin_utils  # pylint: disable=g-import-not-at-top
    gin_utils.parse_gin(files, bindings)
    _PARSED_FROM_ENV.extend(files + bindings)
    logging.info("tokenizers configured by $%s=%s and $%s=%s", TOKENIZERS_GIN_ENV, files,
                 TOKENIZERS_BINDINGS_ENV, bindings)
  return list(_PARSED_FROM_ENV)


@gin.configurable(module="tasks")
def seqio_cache_dirs(cache_dirs: Sequence[str] = ()) -> list[str]:
  """Where cached tasks are looked for: the binding, then $MUSICLM_SEQIO_CACHE_DIR."""
  dirs = list(cache_dirs)
  if os.environ.get(CACHE_DIR_ENV):
    dirs.append(os.environ[CACHE_DIR_ENV])
  return [os.path.expanduser(d) for d in dirs]


def add_configured_cache_dirs() -> None:
  known = seqio.get_global_cache_dirs()
  missing = [d for d in seqio_cache_dirs() if d not in known]
  if missing:
    seqio.add_global_cache_dirs(missing)


class TokenTask(seqio.Task):
  """A seqio Task that looks in the configured cache dirs and says how to fill them."""

  @property
  def cache_dir(self) -> Optional[str]:
    add_configured_cache_dirs()  # at read time: gin bindings parsed after import count
    return super().cache_dir

  def assert_cached(self) -> None:
    if not self.cache_dir:
      raise FileNotFoundError(
          f"seqio task {self.name!r} is not cached in any of {seqio.get_global_cache_dirs()}. "
          f"Cache it with: {TOKENIZERS_GIN_ENV}=tasks/<dataset>_tokens.gin "
          f"{TOKENIZERS_BINDINGS_ENV}=\"SOUNDSTREAM_DIR='...'; W2V_BERT_DIR='...'; "
          f"MULAN_DIR='...'\" python -m "
          f"seqio.scripts.cache_tasks_main --module_import=musiclm_jax.data.token_tasks "
          f"--tasks={self.name} --output_cache_dir=<dir>, then point ${CACHE_DIR_ENV} (or "
          "tasks.seqio_cache_dirs.cache_dirs) at <dir>.")


# --- skipping and counting ----------------------------------------------------------------------

_SKIPPED: collections.Counter = collections.Counter()
_SKIPPED_LOCK = threading.Lock()


def skipped_counts() -> dict[str, int]:
  """{reason: clips skipped} in this process, over every tokenizing task."""
  with _SKIPPED_LOCK:
    return dict(_SKIPPED)


def skip_reason(wav: np.ndarray, sample_rate: int, min_seconds: float) -> Optional[tuple[str, str]]:
  """(reason, message) when a clip should not be tokenized, else None."""
  if wav.size == 0:
    return EMPTY, "0 samples"
  bad = int(np.sum(~np.isfinite(wav)))
  if bad:
    return NON_FINITE, f"{bad} NaN/Inf samples"
  seconds = wav.shape[0] / sample_rate
  if seconds < min_seconds:
    return TOO_SHORT, f"{seconds:.2f} s, shorter than the {min_seconds} s the stages crop"
  if not np.any(wav):
    return SILENT, "every sample is 0"  # digital silence: no music to learn, constant codes
  return None


# --- the tokenizing preprocessor ----------------------------------------------------------------

def tokenize_clips(dataset: tf.data.Dataset, *, task_name: str, layout: token_layout.TokenLayout,
                   sample_rate: int, min_seconds: float,
                   load: Callable[[], music_tokenizers.MusicTokenizers] =
                   music_tokenizers.load_music_tokenizers) -> tf.data.Dataset:
  """{"audio": float32 [L], "id"(, "text")} -> the token streams + "tokenizers" (+
  "mulan_text", the caption's MuLan codes, where clips come with "text"), bad clips left out.

  A clip with an empty caption gets its audio codes as text codes: conditioning on either is
  then the same. Runs before the cache only: the JAX tokenizers are called through
  tf.numpy_function, which no checkpointed training iterator ever sees (it reads the cached
  TFRecords).
  """
  shapes = music_tokenizers.stream_shapes(layout)
  empty = {"mulan": np.zeros(shapes["mulan"], np.int32),
           "semantic": np.zeros((0,), np.int32),
           "acoustic": np.zeros((0, layout.acoustic_levels), np.int32)}

  def tokenize_one(wav, clip_id):
    clip_id = clip_id.decode("utf-8", "replace")
    problem = skip_reason(wav, sample_rate, min_seconds)
    streams, fingerprint = empty, b""
    if problem is None:
      tokenizers = load()
      if tokenizers.layout != layout:
        raise ValueError(f"{task_name} is registered for the token layout {layout}, but the "
                         f"configured tokenizers use {tokenizers.layout}")
      try:
        streams = tokenizers.tokenize(wav, sample_rate)
        fingerprint = tokenizers.fingerprint.encode()
      except ValueError as error:
        problem = UNTOKENIZABLE, str(error)
    if problem is not None:
      reason, message = problem
      with _SKIPPED_LOCK:
        _SKIPPED[reason] += 1
        counts = dict(_SKIPPED)
      logging.warning("%s: skipping clip %s (%s): %s; skipped so far: %s", task_name, clip_id,
                      reason, message, counts)
      streams = empty
    return (streams["mulan"], streams["semantic"], streams["acoustic"], fingerprint,
            np.bytes_(problem[0] if problem else b""))

  def text_codes(caption, audio_codes, skip):
    caption = caption.decode("utf-8", "replace").strip()
    if skip or not caption:
      return audio_codes
    return np.asarray(load().mulan.text_to_tokens([caption]))[0].astype(np.int32)

  def tokenize(ex):
    mulan, semantic, acoustic, fingerprint, skip = tf.numpy_function(
        tokenize_one, [ex["audio"], ex["id"]],
        [tf.int32, tf.int32, tf.int32, tf.string, tf.string], name="tokenize")
    out = {"mulan": tf.ensure_shape(mulan, shapes["mulan"]),
           "semantic": tf.ensure_shape(semantic, shapes["semantic"]),
           "acoustic": tf.ensure_shape(acoustic, shapes["acoustic"]),
           "id": ex["id"], "tokenizers": tf.ensure_shape(fingerprint, []),
           "skip": tf.ensure_shape(skip, [])}
    if "text" in ex:
      text = tf.numpy_function(text_codes, [ex["text"], mulan, skip], tf.int32, name="text_codes")
      out["mulan_text"] = tf.ensure_shape(text, shapes["mulan"])
    return out

  dataset = dataset.map(tokenize).filter(lambda ex: tf.equal(ex["skip"], ""))
  return dataset.map(lambda ex: {k: v for k, v in ex.items() if k != "skip"})


def select_clip(dataset: tf.data.Dataset, id_key: str, id_prefix: str,
                caption_key: Optional[str] = None) -> tf.data.Dataset:
  """TFDS example -> {"audio": float32 [-1, 1), "id": "<id_prefix><ex[id_key]>"} (+ "text":
  ex[caption_key])."""

  @seqio.map_over_dataset
  def select(ex):
    clip_id = ex[id_key]
    if clip_id.dtype != tf.string:
      clip_id = tf.strings.as_string(clip_id)
    out = {"audio": tf.cast(ex["audio"], tf.float32) / tfds_audio.PCM_SCALE,
           "id": tf.strings.join([id_prefix, clip_id])}
    if caption_key:
      out["text"] = ex[caption_key]
    return out

  return select(dataset)


def check_tokenizers(dataset: tf.data.Dataset, task_name: str) -> tf.data.Dataset:
  """Refuses cached clips that other tokenizers made, when this process has tokenizers bound.

  Runs after the cache, so it is plain tf ops (checkpointable).
  """
  expected = music_tokenizers.configured_fingerprint()
  if expected is None:
    return dataset

  @seqio.map_over_dataset
  def check(ex):
    same = tf.debugging.assert_equal(
        ex["tokenizers"], expected,
        message=f"{task_name}: the cache was made by other tokenizers than the ones configured "
                f"here ({expected}); re-cache it (cache_tasks_main --overwrite) or configure the "
                "tokenizers that made it. The cache says")
    with tf.control_dependencies([same]):
      return {k: tf.identity(v) for k, v in ex.items()}

  return check(dataset)


# --- registration -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TokenTaskSpec:
  """A tokenizing task: which TFDS config, its clips' rate, and the stage crops over it."""

  dataset: str
  config: str
  version: str
  splits: tuple[str, ...]
  sample_rate: int
  id_key: str
  layout: token_layout.TokenLayout
  crop_seconds: Mapping[str, float]   # stage -> crop; the longest is the shortest clip kept
  caption_key: Optional[str] = None   # a captioned set's text feature: caches "mulan_text"
  prepare: Optional[Callable[[str], None]] = dataclasses.field(default=None, compare=False)

  @property
  def name(self) -> str:
    return f"{self.dataset}_tokens_{self.config}"

  @property
  def min_seconds(self) -> float:
    return max(self.crop_seconds.values())


def token_features(layout: token_layout.TokenLayout,
                   captioned: bool = False) -> dict[str, seqio.Feature]:
  features = {**token_stream_features(layout), "id": _STRING, "tokenizers": _STRING}
  if captioned:
    features["mulan_text"] = features["mulan"]
  return features


_REGISTERED: dict[str, TokenTaskSpec] = {}


def register_token_tasks(spec: TokenTaskSpec) -> str:
  """Registers the tokenizing task of `spec` and its stage tasks (idempotent); returns its name."""
  name = spec.name
  if name in _REGISTERED and _REGISTERED[name] != spec:
    raise ValueError(f"seqio task {name!r} is already registered as {_REGISTERED[name]}")
  _REGISTERED[name] = spec
  if name not in seqio.TaskRegistry.names():
    source = audio_tasks.AudioTfdsSource(f"{spec.dataset}/{spec.config}:{spec.version}",
                                         splits=spec.splits, prepare=spec.prepare)
    seqio.TaskRegistry.add(
        name, source=source, task_cls=TokenTask,
        output_features=token_features(spec.layout, captioned=bool(spec.caption_key)),
        preprocessors=[
            functools.partial(select_clip, id_key=spec.id_key,
                              id_prefix=f"{spec.dataset}/{spec.config}/",
                              caption_key=spec.caption_key),
            functools.partial(tokenize_clips, task_name=name, layout=spec.layout,
                              sample_rate=spec.sample_rate, min_seconds=spec.min_seconds),
            seqio.CacheDatasetPlaceholder(required=True),
            functools.partial(check_tokenizers, task_name=name),
        ])
  for stage_name, crop in spec.crop_seconds.items():
    stage_tasks.register_stage_tasks(name, stage_name, spec.layout, crop)
  return name


@gin.configurable(module="tasks")
def token_task_crop_seconds(token_task: str = gin.REQUIRED,
                            stage_name: str = gin.REQUIRED) -> float:
  """The crop a stage task over `token_task` uses; for gin, so feature lengths derive from it:
  `tasks.stage_feature_lengths.crop_seconds = @tasks.token_task_crop_seconds()`."""
  if token_task not in _REGISTERED:
    raise ValueError(f"{token_task!r} is not a registered tokenizing task; known: "
                     f"{sorted(_REGISTERED)}")
  return _REGISTERED[token_task].crop_seconds[stage_name]


def paper_crops(clip_seconds: float, layout: token_layout.TokenLayout = token_layout.PAPER) -> dict:
  """The paper's stage crops (30 / 10 / 3 s), shortened to clips of `clip_seconds`."""
  return {s: min(layout.stage(s).crop_seconds, clip_seconds) for s in token_layout.STAGE_NAMES}


# The synthetic_music configs the tiny tokenizers (tests, the demo) tokenize.
TINY_SYNTHETIC_CONFIGS = ("tiny", "demo")
# Synthetic tiny: the crops of the synthetic token streams (the whole 4 s clip, 1 s, 0.5 s).
TINY_SYNTHETIC_CROP_FRACTIONS = {"semantic": 1.0, "coarse": 0.25, "fine": 0.125}
# FMA's 30 s clips decode a little short (29.9x s); 29 s keeps nearly all of them.
FMA_CLIP_SECONDS = 29.0
# MusicCaps segments are 10 s; a few decode a little short.
MUSICCAPS_CLIP_SECONDS = 9.6


def layout_and_crops(config_name: str, clip_seconds: float,
                     layout: Optional[token_layout.TokenLayout] = None):
  """(layout, stage crops) of a generated set's config: by default the tiny layout with the
  synthetic token streams' crop fractions for TINY_SYNTHETIC_CONFIGS, else the paper's."""
  if layout is None:
    layout = token_layout.TINY if config_name in TINY_SYNTHETIC_CONFIGS else token_layout.PAPER
  if layout == token_layout.TINY:
    return layout, {s: clip_seconds * f for s, f in TINY_SYNTHETIC_CROP_FRACTIONS.items()}
  return layout, paper_crops(clip_seconds, layout)


def synthetic_music_spec(config, layout: Optional[token_layout.TokenLayout] = None) -> TokenTaskSpec:
  """The tokenizing task of a synthetic_music config: by default the tiny token layout for the
  configs in TINY_SYNTHETIC_CONFIGS, the paper layout for the others."""
  if isinstance(config, str):
    config = synthetic_music.config_by_name(config)
  layout, crops = layout_and_crops(config.name, config.seconds, layout)
  return TokenTaskSpec(
      dataset=synthetic_music.NAME, config=config.name, version=synthetic_music.VERSION,
      splits=("train", "validation"), sample_rate=config.sample_rate, id_key="clip_index",
      layout=layout, crop_seconds=crops, caption_key="caption",
      prepare=lambda data_dir: synthetic_music.ensure_built(config, data_dir))


def register_synthetic_music_token_tasks(config, layout=None) -> str:
  return register_token_tasks(synthetic_music_spec(config, layout))


for _config in synthetic_music.BUILDER_CONFIGS:
  register_synthetic_music_token_tasks(_config)


def rendered_scores_spec(config, layout: Optional[token_layout.TokenLayout] = None) -> TokenTaskSpec:
  """The tokenizing task of a rendered_scores config: the tiny layout (and the synthetic set's
  crop fractions) for its tiny and demo configs, the paper layout for the full ones."""
  if isinstance(config, str):
    config = rendered_scores.config_by_name(config)
  layout, crops = layout_and_crops(config.name, config.seconds, layout)
  return TokenTaskSpec(
      dataset=rendered_scores.NAME, config=config.name, version=rendered_scores.VERSION,
      splits=rendered_scores.SPLITS, sample_rate=config.sample_rate, id_key="clip_id",
      layout=layout, crop_seconds=crops, caption_key="caption",
      prepare=lambda data_dir: rendered_scores.ensure_built(config, data_dir))


for _config in rendered_scores.BUILDER_CONFIGS:
  register_token_tasks(rendered_scores_spec(_config))
for _config in fma.BUILDER_CONFIGS:
  register_token_tasks(TokenTaskSpec(
      dataset=fma.NAME, config=_config.name, version=fma.VERSION,
      splits=tuple(fma.SPLITS.values()), sample_rate=_config.sample_rate, id_key="track_id",
      layout=token_layout.PAPER, crop_seconds=paper_crops(FMA_CLIP_SECONDS)))
for _config in musiccaps.BUILDER_CONFIGS:
  register_token_tasks(TokenTaskSpec(
      dataset=musiccaps.NAME, config=_config.name, version=musiccaps.VERSION,
      splits=("train", "eval"), sample_rate=_config.sample_rate, id_key="ytid",
      layout=token_layout.PAPER, crop_seconds=paper_crops(MUSICCAPS_CLIP_SECONDS),
      caption_key="caption"))

parse_tokenizers_gin_from_env()
