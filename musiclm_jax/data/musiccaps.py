"""`musiccaps`: MusicCaps (Agostinelli et al., 2023), MusicLM's evaluation set, as TFDS.

Manual download: put in the manual dir `musiccaps-public.csv` and the clips, named by
YouTube id (`<ytid>.wav`, `.flac`, `.mp3` or `.ogg`), in a folder `audio/` (or beside the
csv). A file may hold the 10 s segment itself or the whole video: anything more than 1 s
longer than the segment is cut at start_s..end_s.

Configs `16k` and `24k` (the audio's rate). Splits: `eval` (is_audioset_eval; the 2.9k
clips MusicLM reports on) and `train` (the rest). Features: audio (mono int16,
tfds_audio.PcmAudio), ytid, start_s, end_s, caption, aspect_list, audioset_positive_labels,
author_id, is_balanced_subset, is_audioset_eval.

Many videos are gone from YouTube, so every copy of MusicCaps is a different subset.
`info.metadata["present_ytids"]` lists, per split, the clips this build holds, so an
evaluation can say on what it ran; `skipped` lists the rest with a reason (missing,
undecodable, empty, too_short, ...; tfds_audio.SkipLog).
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from musiclm_jax.core import audio
from musiclm_jax.data import tfds_audio

NAME = "musiccaps"
VERSION = "1.0.0"
MANUAL_INSTRUCTIONS = __doc__.split("\n\n")[1]
CSV_NAME = "musiccaps-public.csv"
CSV_COLUMNS = ("ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list",
               "caption", "author_id", "is_balanced_subset", "is_audioset_eval")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
# A file this much longer than its segment is the whole video (downloaders differ).
FULL_VIDEO_SLACK_S = 1.0


@dataclasses.dataclass(eq=False)
class MusicCapsConfig(tfds.core.BuilderConfig):
  sample_rate: int = 16000
  # Segments are 10 s; a much shorter cut means the video was shorter than its labels say.
  min_seconds: float = 5.0


BUILDER_CONFIGS = tuple(
    MusicCapsConfig(name=f"{rate // 1000}k", sample_rate=rate,
                    description=f"MusicCaps at {rate} Hz") for rate in (16000, 24000))


def _flag(value: str, column: str) -> bool:
  if value.strip().lower() in ("true", "1"):
    return True
  if value.strip().lower() in ("false", "0"):
    return False
  raise ValueError(f"{column}: expected True or False, got {value!r}")


def read_captions(path: str) -> list[dict]:
  """The rows of musiccaps-public.csv, typed; errors name the file and line."""
  with open(path, encoding="utf-8-sig", newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(f"{path}: no column(s) {missing}; header is {reader.fieldnames}")
    rows = []
    for number, row in enumerate(reader, start=1):
      # Captions span lines, so the row number is what finds it; the line helps editors.
      where = f"{path}, row {number} (line {reader.line_num})"
      try:
        aspects = ast.literal_eval(row["aspect_list"]) if row["aspect_list"].strip() else []
      except (ValueError, SyntaxError):
        logging.warning("%s: aspect_list is not a list literal: %r", where,
                        row["aspect_list"])
        aspects = [row["aspect_list"]]
      try:
        rows.append({
            "ytid": row["ytid"], "start_s": float(row["start_s"]),
            "end_s": float(row["end_s"]), "caption": row["caption"],
            "aspect_list": [str(a) for a in aspects],
            "audioset_positive_labels": [
                label for label in row["audioset_positive_labels"].split(",") if label],
            "author_id": int(row["author_id"]),
            "is_balanced_subset": _flag(row["is_balanced_subset"], "is_balanced_subset"),
            "is_audioset_eval": _flag(row["is_audioset_eval"], "is_audioset_eval"),
        })
      except ValueError as error:
        raise ValueError(f"{where}: {error}") from error
  return rows


def find_clips(manual_dir: str) -> dict[str, str]:
  """ytid -> audio file, from manual_dir/audio/ and manual_dir itself (audio/ wins)."""
  clips = {}
  for folder in (manual_dir, os.path.join(manual_dir, "audio")):
    if not os.path.isdir(folder):
      continue
    for name in sorted(os.listdir(folder)):
      stem, extension = os.path.splitext(name)
      if extension.lower() in AUDIO_EXTENSIONS:
        clips[stem] = os.path.join(folder, name)
  return clips


def load_segment(path: str, row: dict, sample_rate: int, min_seconds: float) -> np.ndarray:
  """The row's 10 s: the file itself, or its [start_s, end_s) if it is the whole video."""
  wav = tfds_audio.load_clip(path, sample_rate, min_seconds=0.0)
  segment = row["end_s"] - row["start_s"]
  if len(wav) / sample_rate > segment + FULL_VIDEO_SLACK_S:
    wav = wav[int(round(row["start_s"] * sample_rate)):int(round(row["end_s"] * sample_rate))]
  seconds = len(wav) / sample_rate
  if seconds < min_seconds:
    raise audio.AudioError(
        f"too short: {path} gives {seconds:.2f} s for {row['ytid']} [{row['start_s']}, "
        f"{row['end_s']}), fewer than the {min_seconds} s minimum")
  return wav


class Musiccaps(tfds.core.GeneratorBasedBuilder):
  """MusicCaps: 10 s YouTube music clips with expert captions and aspect lists."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "audio": tfds_audio.PcmAudio(self.builder_config.sample_rate),
            "ytid": text(), "start_s": np.float32, "end_s": np.float32, "caption": text(),
            "aspect_list": tfds.features.Sequence(text()),
            "audioset_positive_labels": tfds.features.Sequence(text()),
            "author_id": np.int32, "is_balanced_subset": np.bool_,
            "is_audioset_eval": np.bool_,
        }),
        supervised_keys=("audio", "caption"),
        homepage="https://www.kaggle.com/datasets/googleai/musiccaps",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    csv_path = os.path.join(manual_dir, CSV_NAME)
    if not os.path.exists(csv_path):
      raise FileNotFoundError(f"{csv_path} does not exist; see "
                              "Musiccaps.MANUAL_DOWNLOAD_INSTRUCTIONS")
    clips = find_clips(manual_dir)
    self._skips = tfds_audio.SkipLog(NAME)
    self._present = {"train": [], "eval": []}
    by_split = {"train": [], "eval": []}
    listed = {"train": 0, "eval": 0}
    for row in read_captions(csv_path):
      split = "eval" if row["is_audioset_eval"] else "train"
      listed[split] += 1
      if row["ytid"] in clips:
        by_split[split].append((row, clips[row["ytid"]]))
      else:  # found up front, so a split with no clips is left out instead of failing
        self._skips.skip(split, row["ytid"], os.path.join(manual_dir, "audio", row["ytid"]),
                         tfds_audio.MISSING)
    self.info.metadata["listed"] = listed
    self._write_metadata()
    return {split: self._generate_examples(split, items)
            for split, items in by_split.items() if items}

  def _write_metadata(self):
    self._skips.write_to(self.info.metadata)
    self.info.metadata["present_ytids"] = {s: sorted(ids) for s, ids in self._present.items()}

  def _generate_examples(self, split, items):
    config = self.builder_config

    def decode(item):
      row, path = item
      try:
        return load_segment(path, row, config.sample_rate, config.min_seconds)
      except Exception as error:  # pylint: disable=broad-except
        return error  # a bad clip is recorded, never a failed build

    for (row, path), wav in tfds_audio.ordered_map(decode, items):
      if isinstance(wav, Exception):
        self._skips.skip(split, row["ytid"], path, wav)
        continue
      self._present[split].append(row["ytid"])
      yield row["ytid"], dict(row, audio=tfds_audio.to_pcm16(wav))
    if not self._present[split]:
      raise self._skips.nothing_left(split)
    self._write_metadata()  # after every split, so the saved info is the final one
