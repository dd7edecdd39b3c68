"""Fake FMA and MusicCaps manual-download trees, written by the tests themselves.

Audio is a few seconds of tone, encoded with soundfile (mp3 / wav / flac), so builds stay
fast; the metadata copies the released files' layout and their awkward corners.
"""
import csv
import os
import zipfile

import numpy as np
import soundfile as sf

CLIP_SECONDS = 3.0
SHORT_SECONDS = 1.0
# Tests build with min_seconds between SHORT_SECONDS and CLIP_SECONDS.
MIN_SECONDS = 2.0


def tone(seconds=CLIP_SECONDS, rate=16000, hz=440.0, channels=1, level=0.3):
  t = np.arange(int(seconds * rate)) / rate
  wav = level * np.sin(2 * np.pi * hz * t)
  return np.stack([wav] * channels, axis=1) if channels > 1 else wav


def write_audio(path, wav, rate, fmt=None, subtype=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, wav, rate, format=fmt, subtype=subtype)


def write_bytes(path, data: bytes):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


def corrupt_bytes():
  """Looks like nothing any decoder knows (fixed, so failures reproduce)."""
  return np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


# --- FMA ------------------------------------------------------------------------------------

# The columns of the real tracks.csv that matter here, plus two that do not (comments may
# span lines, duration is a number), in its (level 0, level 1) form.
FMA_COLUMNS = (("album", "comments"), ("album", "title"), ("artist", "name"),
               ("set", "split"), ("set", "subset"), ("track", "duration"),
               ("track", "genre_top"), ("track", "genres"), ("track", "genres_all"),
               ("track", "license"), ("track", "tags"), ("track", "title"))

# track_id -> (subset, split, audio kind, genre_top, genres, tags, title, artist, album)
FMA_TRACKS = {
    2: ("small", "training", "mp3", "Hip-Hop", "[21]", "['lo-fi', \"rock'n'roll\"]",
        "Food", "AWOL", "AWOL - A Way Of Life"),
    5: ("small", "training", "mp3", "", "[12, 25]", "[]", 'Café, "Live" at Ütopia',
        "Les Élèves", "Best, of"),
    10: ("small", "validation", "stereo44k", "Rock", "[12]", "['guitar']", "Stereo", "Duo",
         ""),
    20: ("small", "test", "mp3", "Rock", "[12]", "[]", "Plain", "Solo", "Album"),
    30: ("small", "training", "short", "Rock", "[12]", "[]", "Short", "Solo", ""),
    40: ("small", "training", "corrupt", "Rock", "[12]", "[]", "Broken", "Solo", ""),
    50: ("small", "training", "absent", "Rock", "[12]", "[]", "Gone", "Solo", ""),
    99134: ("small", "training", "empty", "Rock", "[12]", "[]", "Empty 1", "X", ""),
    108925: ("small", "validation", "empty", "Rock", "[12]", "[]", "Empty 2", "X", ""),
    133297: ("small", "test", "empty", "Rock", "[12]", "[]", "Empty 3", "X", ""),
    60: ("medium", "training", "mp3", "Punk", "[25]", "[]", "Medium only", "M", ""),
    70: ("large", "test", "mp3", "Punk", "[25]", "[]", "Large only", "L", ""),
}
FMA_GENRES = {12: "Rock", 21: "Hip-Hop", 25: "Punk"}
FMA_GOOD = {"small": {"train": {2, 5}, "validation": {10}, "test": {20}},
            "medium": {"train": {2, 5, 60}, "validation": {10}, "test": {20}}}
FMA_SKIPPED = {30: "too_short", 40: "undecodable", 50: "missing", 99134: "empty",
               108925: "empty", 133297: "empty"}


def _tracks_csv_rows():
  yield [""] + [level0 for level0, _ in FMA_COLUMNS]
  yield [""] + [level1 for _, level1 in FMA_COLUMNS]
  yield ["track_id"] + [""] * len(FMA_COLUMNS)  # pandas writes the index name on its own row
  for track_id, (subset, split, _, top, genres, tags, title, artist, album) in sorted(
      FMA_TRACKS.items()):
    values = {("album", "comments"): "first line\nsecond, \"quoted\" line",
              ("album", "title"): album, ("artist", "name"): artist,
              ("set", "split"): split, ("set", "subset"): subset,
              ("track", "duration"): "30", ("track", "genre_top"): top,
              ("track", "genres"): genres, ("track", "genres_all"): genres,
              ("track", "license"): "Attribution-NonCommercial 3.0", ("track", "tags"): tags,
              ("track", "title"): title}
    yield [str(track_id)] + [values[column] for column in FMA_COLUMNS]


def _write_fma_audio(folder, subsets, rate):
  for track_id, (subset, _, kind, *_) in FMA_TRACKS.items():
    if subset not in subsets or kind == "absent":
      continue
    name = f"{track_id:06d}"
    path = os.path.join(folder, name[:3], name + ".mp3")
    hz = 200.0 + track_id % 500
    if kind == "mp3":
      write_audio(path, tone(rate=rate, hz=hz), rate, fmt="MP3")
    elif kind == "stereo44k":
      write_audio(path, tone(rate=44100, hz=hz, channels=2), 44100, fmt="MP3")
    elif kind == "short":
      write_audio(path, tone(SHORT_SECONDS, rate=rate, hz=hz), rate, fmt="MP3")
    elif kind == "corrupt":
      write_bytes(path, corrupt_bytes())
    elif kind == "empty":
      write_bytes(path, b"")


def make_fma_tree(root, zipped=False, rate=16000):
  """manual_dir with fma_metadata/, fma_small/ and fma_medium/ (or their zips)."""
  os.makedirs(root, exist_ok=True)
  metadata = os.path.join(root, "fma_metadata")
  os.makedirs(metadata, exist_ok=True)
  with open(os.path.join(metadata, "tracks.csv"), "w", encoding="utf-8", newline="") as f:
    csv.writer(f).writerows(_tracks_csv_rows())
  with open(os.path.join(metadata, "genres.csv"), "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["genre_id", "#tracks", "parent", "title", "top_level"])
    for genre_id, title in FMA_GENRES.items():
      writer.writerow([genre_id, 1, 0, title, genre_id])
  _write_fma_audio(os.path.join(root, "fma_small"), {"small"}, rate)
  _write_fma_audio(os.path.join(root, "fma_medium"), {"small", "medium"}, rate)
  if zipped:
    for folder in ("fma_metadata", "fma_small"):
      _zip_folder(root, folder)
  return root


def _zip_folder(root, folder):
  """folder -> folder.zip (members under folder/, as FMA ships them); removes the folder."""
  with zipfile.ZipFile(os.path.join(root, folder + ".zip"), "w") as archive:
    for base, _, files in os.walk(os.path.join(root, folder)):
      for name in files:
        path = os.path.join(base, name)
        archive.write(path, os.path.relpath(path, root))
  for base, dirs, files in os.walk(os.path.join(root, folder), topdown=False):
    for name in files:
      os.remove(os.path.join(base, name))
    for name in dirs:
      os.rmdir(os.path.join(base, name))
  os.rmdir(os.path.join(root, folder))


# --- MusicCaps --------------------------------------------------------------------------------

MUSICCAPS_COLUMNS = ("ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list",
                     "caption", "author_id", "is_balanced_subset", "is_audioset_eval")
TRICKY_CAPTION = ('A mellow "lo-fi" track, with piano — très calme; 日本語 too.\n'
                  "Second line, with 'single' quotes.")
# The fixture's segments are 3 s long (real ones are 10 s); the full video is 12 s, its
# segment [5, 8) is a 600 Hz tone and everything else 300 Hz, so a wrong cut shows.
MUSICCAPS_ROWS = (
    # ytid, start, end, eval, balanced, how the clip is stored
    ("-dash_1", 0, 3, True, True, "segment_wav"),
    ("b_2", 5, 8, False, False, "full_video_flac"),
    ("c3", 30, 33, False, True, "stereo44k_mp3"),
    ("gone_eval", 10, 13, True, False, None),
    ("gone_train", 10, 13, False, False, None),
)
MUSICCAPS_PRESENT = {"eval": ["-dash_1"], "train": ["b_2", "c3"]}
MUSICCAPS_MISSING = {"gone_eval": "eval", "gone_train": "train"}


def write_musiccaps_csv(root, rows):
  """rows: dicts with any of MUSICCAPS_COLUMNS; the rest get plausible values."""
  with open(os.path.join(root, "musiccaps-public.csv"), "w", encoding="utf-8",
            newline="") as f:
    writer = csv.DictWriter(f, MUSICCAPS_COLUMNS)
    writer.writeheader()
    for row in rows:
      full = {"start_s": 0, "end_s": 3, "audioset_positive_labels": "/m/0140xf,/m/02cjck",
              "aspect_list": "['lo-fi', \"rock'n'roll\", 'piano']", "caption": TRICKY_CAPTION,
              "author_id": 4, "is_balanced_subset": False, "is_audioset_eval": False}
      full.update(row)
      writer.writerow(full)


def make_musiccaps_tree(root, rate=16000):
  """manual_dir with musiccaps-public.csv and audio/ (two rows have no clip)."""
  os.makedirs(os.path.join(root, "audio"), exist_ok=True)
  rows = []
  for ytid, start, end, is_eval, balanced, kind in MUSICCAPS_ROWS:
    rows.append({"ytid": ytid, "start_s": start, "end_s": end, "is_audioset_eval": is_eval,
                 "is_balanced_subset": balanced})
    base = os.path.join(root, "audio", ytid)
    if kind == "segment_wav":
      write_audio(base + ".wav", tone(end - start, rate, 600.0), rate)
    elif kind == "full_video_flac":
      t = np.arange(12 * rate) / rate
      wav = 0.3 * np.sin(2 * np.pi * np.where((t >= start) & (t < end), 600.0, 300.0) * t)
      write_audio(base + ".flac", wav, rate)
    elif kind == "stereo44k_mp3":
      write_audio(base + ".mp3", tone(end - start, 44100, 600.0, channels=2), 44100,
                  fmt="MP3")
  write_musiccaps_csv(root, rows)
  return root
