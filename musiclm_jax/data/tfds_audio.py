"""What the audio TFDS builders share: the PCM feature, decoding with skips, offline builds.

Audio is stored as int16 PCM in raw bytes: half the disk of float32, more resolution than
any source here (mp3, 16-bit wav), and the bytes decode with one `tf.io.decode_raw`.
Read it back as float with `pcm_to_float` (numpy) or `audio_tasks` (tf).

A corpus of real files always has some bad ones (FMA ships empty and truncated mp3s,
MusicCaps clips vanish from YouTube). A build must never stop on them, and what was left
out must be on record next to the data: `SkipLog` collects (id, file, reason, message)
and writes them into the dataset's `MetadataDict`, saved with the dataset info.
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from musiclm_jax.core import audio

PCM_SCALE = 32768.0
# Decoding threads: libsndfile (through cffi) and soxr work outside the GIL, so threads
# spread decoding over the cores without multiprocessing (the skip log stays in one process).
DECODE_THREADS = max(1, os.cpu_count() or 1)

_In = TypeVar("_In")
_Out = TypeVar("_Out")

# Reasons a file is left out of a build.
MISSING = "missing"
UNDECODABLE = "undecodable"
EMPTY = "empty"
NON_FINITE = "non_finite"
TOO_SHORT = "too_short"
REASONS = (MISSING, UNDECODABLE, EMPTY, NON_FINITE, TOO_SHORT)


class PcmAudio(tfds.features.Audio):
  """`tfds.features.Audio` of int16 samples stored as raw bytes.

  tfds 4.9.10's Audio returns numpy input unencoded, ignoring `encoding`; this routes it
  through the Tensor encoder so `Encoding.BYTES` takes effect (int64 lists would spend up
  to 10 bytes on every negative sample).
  """

  def __init__(self, sample_rate: int, doc=None):
    super().__init__(shape=(None,), dtype=np.int16, sample_rate=sample_rate,
                     encoding=tfds.features.Encoding.BYTES, doc=doc)

  def encode_example(self, audio_or_path_or_fobj):
    if isinstance(audio_or_path_or_fobj, np.ndarray):
      return tfds.features.Tensor.encode_example(self, audio_or_path_or_fobj)
    return super().encode_example(audio_or_path_or_fobj)

  @classmethod
  def from_json_content(cls, value) -> "PcmAudio":
    return cls(sample_rate=value.get("sample_rate"))

  def to_json_content(self):
    return {"sample_rate": self.sample_rate}


def to_pcm16(wav: np.ndarray) -> np.ndarray:
  """float [-1, 1] -> int16, clipped (decoded mp3 can overshoot full scale slightly)."""
  return np.clip(np.round(wav * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1).astype(np.int16)


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
  return pcm.astype(np.float32) / np.float32(PCM_SCALE)


def classify_error(error: audio.AudioError) -> str:
  """The skip reason of an `audio.load_audio` error (its messages are the contract)."""
  message = str(error)
  if message.startswith("audio file not found"):
    return MISSING
  if message.startswith("empty audio file"):
    return EMPTY
  if message.startswith("NaN/Inf"):
    return NON_FINITE
  return UNDECODABLE


def load_clip(path, sample_rate: int, min_seconds: float) -> np.ndarray:
  """Mono float32 at `sample_rate`, at least `min_seconds` long.

  Raises audio.AudioError naming the file; a too-short clip's message starts with
  "too short" so `SkipLog.skip` can tell it apart.
  """
  if os.path.exists(path) and os.path.getsize(path) == 0:
    # load_audio would call a 0-byte file undecodable; FMA's known-bad ones are exactly this.
    raise audio.AudioError(f"empty audio file: {os.fspath(path)} has 0 bytes")
  wav = audio.load_audio(path, sample_rate)
  seconds = len(wav) / sample_rate
  if seconds < min_seconds:
    raise audio.AudioError(f"too short: {os.fspath(path)} has {seconds:.2f} s of audio, "
                           f"fewer than the {min_seconds} s minimum")
  return wav


class SkipLog:
  """Files left out of a build, by split; saved into a `tfds.core.MetadataDict`."""

  def __init__(self, dataset: str):
    self._dataset = dataset
    self.entries: list[dict] = []

  def skip(self, split: str, item_id: str, path, reason_or_error,
           message: Optional[str] = None) -> None:
    """`reason_or_error`: a reason (with an optional `message`) or the error to classify."""
    if isinstance(reason_or_error, str):
      reason = reason_or_error
      message = message or ("file not found" if reason == MISSING else reason)
    else:
      message = str(reason_or_error)
      reason = TOO_SHORT if message.startswith("too short") else classify_error(
          reason_or_error)
    self.entries.append({"split": split, "id": str(item_id), "file": os.fspath(path),
                         "reason": reason, "message": message})
    logging.warning("%s: skipping %s (%s): %s", self._dataset, path, reason, message)

  def nothing_left(self, split: str) -> ValueError:
    """The error for a split whose every file was skipped (TFDS cannot write it empty)."""
    entries = [e for e in self.entries if e["split"] == split]
    counts = dict(collections.Counter(e["reason"] for e in entries))
    first = entries[0]["message"] if entries else "none"
    return ValueError(
        f"{self._dataset}: all {len(entries)} files of split {split!r} were skipped "
        f"({counts}), so there is nothing to write; the first: {first}. Check the files "
        "and the config's min_seconds.")

  def counts(self) -> dict[str, int]:
    return dict(collections.Counter(entry["reason"] for entry in self.entries))

  def write_to(self, metadata: tfds.core.MetadataDict) -> None:
    """`skipped` (every entry) and `skipped_counts` ({reason: n}) in the metadata."""
    metadata["skipped"] = list(self.entries)
    metadata["skipped_counts"] = self.counts()


def ordered_map(fn: Callable[[_In], _Out], items: Iterable[_In],
                num_threads: int = DECODE_THREADS) -> Iterator[tuple[_In, _Out]]:
  """(item, fn(item)) in input order, computed `num_threads` at a time.

  At most 2 * num_threads results wait in memory (Executor.map would decode the whole
  corpus ahead of the writer). `fn` must not raise: return the error instead.
  """
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    window = collections.deque()
    for item in items:
      window.append((item, pool.submit(fn, item)))
      if len(window) >= 2 * num_threads:
        first, future = window.popleft()
        yield first, future.result()
    while window:
      first, future = window.popleft()
      yield first, future.result()


def config_by_name(configs, dataset: str, name: str):
  """The config called `name` among a builder's `configs`; the error lists the known ones."""
  for config in configs:
    if config.name == name:
      return config
  raise ValueError(f"unknown {dataset} config {name!r}; known: {[c.name for c in configs]} "
                   f"(or pass a {type(configs[0]).__name__})")


def prepare(builder: tfds.core.DatasetBuilder, manual_dir=None) -> tfds.core.DatasetBuilder:
  """`builder.download_and_prepare` offline: manual files only, no look-up on GCS."""
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else os.fspath(manual_dir),
      try_download_gcs=False))
  return builder


def prepared(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
  """`builder`, prepared (`prepare`: offline, in this process) unless it already is: the
  generated sets' `ensure_built`."""
  if not builder.is_prepared():
    prepare(builder)
  return builder
