"""`fma`: the Free Music Archive (Defferrard et al., 2017) as a TFDS builder.

Manual download: put in the manual dir (default ~/tensorflow_datasets/downloads/manual)
`fma_metadata.zip` and the subset's `fma_<subset>.zip`, or the folders they extract to
(`fma_metadata/tracks.csv`, `fma_<subset>/NNN/NNNNNN.mp3`). Extracted folders are used in
place; zips of audio are extracted once into the TFDS download dir.

Configs `<subset>_<rate>`: subset small / medium / large / full (small is in medium is in
large; full has every track at full length), rate 16k or 24k. Splits are tracks.csv's
('set', 'split'): training -> train, validation, test.

Features: audio (mono int16 at the config's rate, tfds_audio.PcmAudio), track_id,
genre_top, genres (names) and genre_ids, tags, title, artist, album, license, and
`description`: one sentence from the metadata, the text side of MuLan pairs.

Bad files (FMA ships some: empty 099134, 108925, 133297; clips far shorter than 30 s) are
skipped, never fatal; `info.metadata` lists each with its reason (tfds_audio.SkipLog) and
counts the tracks tracks.csv lists per split (`listed`).
"""
from __future__ import annotations

import ast
import csv
import dataclasses
import io
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from musiclm_jax.data import tfds_audio

NAME = "fma"
MANUAL_INSTRUCTIONS = __doc__.split("\n\n")[1]
VERSION = "1.0.0"
SUBSETS = ("small", "medium", "large", "full")
# ('set', 'subset') values each subset contains; None: every track.
_CONTAINS = {"small": {"small"}, "medium": {"small", "medium"},
             "large": {"small", "medium", "large"}, "full": None}
SPLITS = {"training": "train", "validation": "validation", "test": "test"}
# tracks.csv columns we read, as (level 0, level 1) of its two header rows.
COLUMNS = {
    "split": ("set", "split"), "subset": ("set", "subset"),
    "genre_top": ("track", "genre_top"), "genres": ("track", "genres"),
    "tags": ("track", "tags"), "title": ("track", "title"), "license": ("track", "license"),
    "artist": ("artist", "name"), "album": ("album", "title"),
}


@dataclasses.dataclass(eq=False)
class FmaConfig(tfds.core.BuilderConfig):
  subset: str = "small"
  sample_rate: int = 16000
  # FMA clips are 30 s; a much shorter one is a broken file, and too short for MuLan's 10 s.
  min_seconds: float = 10.0


BUILDER_CONFIGS = tuple(
    FmaConfig(name=f"{subset}_{rate // 1000}k", subset=subset, sample_rate=rate,
              description=f"fma_{subset} at {rate} Hz")
    for subset in SUBSETS for rate in (16000, 24000))


# --- tracks.csv -------------------------------------------------------------------------------

def read_tracks(fileobj, source: str) -> dict[int, dict[str, str]]:
  """{track_id: {column name in COLUMNS: raw string}} from tracks.csv as released.

  The file has two header rows (pandas' MultiIndex columns) and a third naming the index
  (`track_id,,,...`). `source` names the file in errors.
  """
  reader = csv.reader(fileobj)
  try:
    header = list(zip(next(reader), next(reader)))
  except StopIteration:
    raise ValueError(f"{source}: fewer than the two header rows tracks.csv has") from None
  missing = sorted(set(COLUMNS.values()) - set(header))
  if missing:
    raise ValueError(f"{source}: no column(s) {missing} in its two header rows; is this "
                     "FMA's tracks.csv?")
  position = {name: header.index(column) for name, column in COLUMNS.items()}
  tracks = {}
  for row in reader:
    if not row or (row[0] == "track_id" and not any(row[1:])):
      continue  # the index-name row
    try:
      track_id = int(row[0])
    except ValueError:
      raise ValueError(f"{source}, line {reader.line_num}: track_id {row[0]!r} is not an "
                       "integer") from None
    if len(row) < len(header):
      raise ValueError(f"{source}, line {reader.line_num}: {len(row)} fields, the header has "
                       f"{len(header)}")
    tracks[track_id] = {name: row[i] for name, i in position.items()}
  return tracks


def read_genres(fileobj) -> dict[int, str]:
  """genre_id -> title from genres.csv."""
  return {int(row["genre_id"]): row["title"] for row in csv.DictReader(fileobj)}


def literal_list(text: str, what: str) -> list:
  """A Python-literal list cell ('[21, 45]', "['rock', \\"rock'n'roll\\"]"); [] if blank."""
  if not text.strip():
    return []
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    logging.warning("fma: %s is not a Python list literal: %r; using []", what, text)
    return []
  return list(value) if isinstance(value, (list, tuple)) else [value]


def describe(genre_top: str, genres: list[str], tags: list[str], title: str,
             artist: str) -> str:
  """One sentence from the metadata: the text MuLan pairs with the audio."""
  kind = genre_top or (genres[0] if genres else "")
  sentence = f"{kind} track" if kind else "A track"
  if title:
    sentence += f' "{title}"'
  if artist:
    sentence += f" by {artist}"
  details = []
  more = [g for g in genres if g != kind]
  if more:
    details.append("genres: " + ", ".join(more))
  if tags:
    details.append("tags: " + ", ".join(str(t) for t in tags))
  return sentence + ("; " + "; ".join(details) if details else "") + "."


# --- files ------------------------------------------------------------------------------------

def _open_metadata(manual_dir: str, name: str):
  """A text handle on fma_metadata/<name>, from the folder or straight from the zip."""
  folder = os.path.join(manual_dir, "fma_metadata", name)
  if os.path.exists(folder):
    return open(folder, encoding="utf-8", newline=""), folder
  archive = os.path.join(manual_dir, "fma_metadata.zip")
  if os.path.exists(archive):
    member = f"fma_metadata/{name}"
    data = zipfile.ZipFile(archive).read(member)
    return io.StringIO(data.decode("utf-8"), newline=""), f"{archive}:{member}"
  raise FileNotFoundError(f"neither {folder} nor {archive} exists; see "
                          "Fma.MANUAL_DOWNLOAD_INSTRUCTIONS")


def audio_path(audio_root: str, track_id: int) -> str:
  name = f"{track_id:06d}"
  return os.path.join(audio_root, name[:3], name + ".mp3")


class Fma(tfds.core.GeneratorBasedBuilder):
  """The Free Music Archive: mono audio with genre, tags and a text description."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "audio": tfds_audio.PcmAudio(self.builder_config.sample_rate),
            "track_id": np.int64, "genre_top": text(),
            "genres": tfds.features.Sequence(text()),
            "genre_ids": tfds.features.Sequence(np.int32),
            "tags": tfds.features.Sequence(text()), "title": text(), "artist": text(),
            "album": text(), "license": text(), "description": text(),
        }),
        supervised_keys=("audio", "description"),
        homepage="https://github.com/mdeff/fma",
        metadata=tfds.core.MetadataDict(),
    )

  def _audio_root(self, dl_manager) -> str:
    manual_dir = os.fspath(dl_manager.manual_dir)
    folder = f"fma_{self.builder_config.subset}"
    if os.path.isdir(os.path.join(manual_dir, folder)):
      return os.path.join(manual_dir, folder)
    archive = os.path.join(manual_dir, folder + ".zip")
    if not os.path.exists(archive):
      raise FileNotFoundError(f"neither {os.path.join(manual_dir, folder)} nor {archive} "
                              f"exists; see Fma.MANUAL_DOWNLOAD_INSTRUCTIONS")
    extracted = os.fspath(dl_manager.extract(archive))
    inner = os.path.join(extracted, folder)
    return inner if os.path.isdir(inner) else extracted

  def _split_generators(self, dl_manager):
    config = self.builder_config
    if config.subset not in _CONTAINS:
      raise ValueError(f"unknown FMA subset {config.subset!r}; expected one of {SUBSETS}")
    manual_dir = os.fspath(dl_manager.manual_dir)
    handle, source = _open_metadata(manual_dir, "tracks.csv")
    with handle:
      tracks = read_tracks(handle, source)
    try:
      handle, _ = _open_metadata(manual_dir, "genres.csv")
      with handle:
        genre_names = read_genres(handle)
    except FileNotFoundError:
      logging.warning("fma: no genres.csv; genres will be listed by id")
      genre_names = {}
    audio_root = self._audio_root(dl_manager)
    wanted = _CONTAINS[config.subset]
    by_split = {split: [] for split in SPLITS.values()}
    for track_id, row in sorted(tracks.items()):
      if wanted is None or row["subset"] in wanted:
        if row["split"] in SPLITS:
          by_split[SPLITS[row["split"]]].append((track_id, row))
    self._skips = tfds_audio.SkipLog(NAME)
    self.info.metadata["listed"] = {split: len(rows) for split, rows in by_split.items()}
    for split, rows in by_split.items():
      # Missing files are found up front, so a split with no audio at all is left out
      # (TFDS refuses to write an empty split) instead of failing the build.
      present = [item for item in rows if os.path.exists(audio_path(audio_root, item[0]))]
      for track_id in sorted({t for t, _ in rows} - {t for t, _ in present}):
        self._skips.skip(split, track_id, audio_path(audio_root, track_id), tfds_audio.MISSING)
      by_split[split] = present
    self._skips.write_to(self.info.metadata)
    return {split: self._generate_examples(split, rows, audio_root, genre_names)
            for split, rows in by_split.items() if rows}

  def _generate_examples(self, split, rows, audio_root, genre_names):
    config = self.builder_config

    def decode(item):
      track_id, _ = item
      try:
        return tfds_audio.load_clip(audio_path(audio_root, track_id), config.sample_rate,
                                    config.min_seconds)
      except Exception as error:  # pylint: disable=broad-except
        return error  # any decoder failure is a bad file, never a failed build

    written = 0
    for (track_id, row), wav in tfds_audio.ordered_map(decode, rows):
      if isinstance(wav, Exception):
        self._skips.skip(split, track_id, audio_path(audio_root, track_id), wav)
        continue
      written += 1
      yield track_id, self._example(track_id, row, wav, genre_names)
    if not written:
      raise self._skips.nothing_left(split)
    # Written after every split, so the saved info has the final list.
    self._skips.write_to(self.info.metadata)

  def _example(self, track_id, row, wav, genre_names):
    what = f"track {track_id}"
    genre_ids = [int(g) for g in literal_list(row["genres"], f"{what} genres")]
    genres = [genre_names.get(g, str(g)) for g in genre_ids]
    tags = [str(t) for t in literal_list(row["tags"], f"{what} tags")]
    return {
        "audio": tfds_audio.to_pcm16(wav), "track_id": track_id,
        "genre_top": row["genre_top"], "genres": genres, "genre_ids": genre_ids, "tags": tags,
        "title": row["title"], "artist": row["artist"], "album": row["album"],
        "license": row["license"],
        "description": describe(row["genre_top"], genres, tags, row["title"], row["artist"]),
    }
