"""The two sides of an evaluation: a generation run folder and a captioned reference split.

Generation folder (what text -> audio inference writes): `generations.jsonl`, one object per
clip with at least `id`, `text`, `file` (a wav relative to the folder), `sample_rate` and
`seconds`, optionally `reference_id`; the wavs (mono, float or int16 PCM); `index.html`.

Reference side: a TFDS split with `audio` (int16 PCM or float, mono), a caption and an id,
named either by a registered seqio task (`synthetic_music_pairs_tiny`, `musiccaps_pairs_16k`;
its TFDS source is read whole, unshuffled and uncropped) or by a TFDS name
(`musiccaps/16k:1.0.0`) in the data dir of `musiclm_jax.data.audio_tasks.tfds_data_dir`.
"""
import dataclasses
import json
import os
from typing import Optional

import numpy as np

from musiclm_jax.core import audio

GENERATIONS_FILE = "generations.jsonl"
REQUIRED_FIELDS = ("id", "text", "file", "sample_rate", "seconds")
ID_KEYS = ("ytid", "id", "clip_index", "track_id", "clip_id")
TEXT_KEYS = ("caption", "text", "description")


@dataclasses.dataclass
class ClipSet:
  """Clips with their ids, texts, rates and (generations only) the reference they imitate."""
  ids: list
  texts: list
  wavs: list               # float32 [samples] each
  sample_rates: list
  reference_ids: list = dataclasses.field(default_factory=list)
  # Generations only: per clip, how it was picked when best-of-N reranked it
  # ({"num_candidates": N, "reranker": {"model": "mulan", "dir": ...}}), else None.
  selections: list = dataclasses.field(default_factory=list)

  def __len__(self):
    return len(self.ids)

  def at_rate(self, sample_rate: int) -> list:
    """The clips resampled to `sample_rate` (an embedder's)."""
    return [audio.resample(wav, rate, sample_rate)
            for wav, rate in zip(self.wavs, self.sample_rates)]


def _file_rate(path: str) -> int:
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  try:
    return int(sf.info(path).samplerate)
  except Exception as error:  # soundfile raises several types for corrupt data
    raise audio.AudioError(f"cannot decode {path}: {error}") from error


def read_generations(folder) -> ClipSet:
  """The clips of a generation run folder; every row is checked against its wav."""
  folder = os.fspath(folder)
  index = os.path.join(folder, GENERATIONS_FILE)
  if not os.path.isfile(index):
    raise FileNotFoundError(f"no {GENERATIONS_FILE} in the generation folder {folder}")
  clips = ClipSet([], [], [], [], [])
  with open(index, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{index}, line {line_number}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON ({error})") from error
      missing = [k for k in REQUIRED_FIELDS if k not in row]
      if missing:
        raise ValueError(f"{where}: missing fields {missing}")
      path = os.path.join(folder, row["file"])
      rate = int(row["sample_rate"])
      if os.path.isfile(path) and _file_rate(path) != rate:
        raise ValueError(f"{path}: the file is at {_file_rate(path)} Hz but {where} says "
                         f"sample_rate {rate}")
      wav = audio.load_audio(path, rate)  # names the file when missing or corrupt
      clips.ids.append(str(row["id"]))
      clips.texts.append(str(row["text"]))
      clips.wavs.append(wav)
      clips.sample_rates.append(rate)
      ref = row.get("reference_id")
      clips.reference_ids.append(None if ref is None else str(ref))
      candidates = int(row.get("num_candidates", 1))
      clips.selections.append({"num_candidates": candidates, "reranker": row.get("reranker")}
                              if candidates > 1 else None)
  if not clips.ids:
    raise ValueError(f"{index} lists no generations")
  if len(set(clips.ids)) != len(clips.ids):
    raise ValueError(f"{index}: generation ids repeat")
  return clips


def pick_key(features, wanted: Optional[str], candidates, what: str, name: str) -> str:
  """`wanted` if the set has it, else the first of `candidates` it has (ValueError if none)."""
  if wanted is not None:
    if wanted not in features:
      raise ValueError(f"{name} has no {what} feature {wanted!r}; it has {sorted(features)}")
    return wanted
  for key in candidates:
    if key in features:
      return key
  raise ValueError(f"{name} has no {what} feature (looked for {candidates}); pass it "
                   f"explicitly, the set has {sorted(features)}")


def as_text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def reference_dataset(name: str, split: str):
  """(tf.data of raw TFDS examples, the audio's sample rate, TFDS info) of a task or a TFDS name."""
  import seqio  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from musiclm_jax.data import audio_tasks, musiccaps  # pylint: disable=import-outside-toplevel,unused-import
  if name in seqio.TaskRegistry.names():
    source = seqio.get_mixture_or_task(name).source
    if not hasattr(source, "tfds_dataset"):
      raise ValueError(f"seqio task {name} does not read a TFDS dataset")
    dataset = source.get_dataset(split=split, shuffle=False)  # builds the synthetic set if needed
    builder = source.tfds_dataset.builder
  else:
    if "/" not in name:
      raise ValueError(f"reference {name!r} is neither a registered seqio task nor a TFDS name "
                       "like 'musiccaps/16k:1.0.0'")
    builder = tfds.builder(name, data_dir=audio_tasks.tfds_data_dir())
    if split not in builder.info.splits:
      raise ValueError(f"{name} has no split {split!r}; it has {sorted(builder.info.splits)}")
    dataset = builder.as_dataset(split=split, shuffle_files=False)
  return dataset, int(builder.info.features["audio"].sample_rate), builder.info


def read_references(name: str, split: str, max_clips: Optional[int] = None,
                    id_key: Optional[str] = None, text_key: Optional[str] = None):
  """(ClipSet, info): the split's clips and a record of what was read (for metrics.json)."""
  dataset, rate, info = reference_dataset(name, split)
  features = dataset.element_spec
  id_key = pick_key(features, id_key, ID_KEYS, "id", name)
  text_key = pick_key(features, text_key, TEXT_KEYS, "caption", name)
  clips = ClipSet([], [], [], [])
  for example in dataset.as_numpy_iterator():
    if max_clips is not None and len(clips) >= max_clips:
      break
    wav = np.asarray(example["audio"])
    wav = (wav.astype(np.float32) / 32768.0 if wav.dtype == np.int16
           else wav.astype(np.float32))
    clips.ids.append(as_text(example[id_key]))
    clips.texts.append(as_text(example[text_key]))
    clips.wavs.append(wav)
    clips.sample_rates.append(rate)
  if not clips.ids:
    raise ValueError(f"reference {name} split {split} holds no clips")
  record = {"name": name, "split": split, "sample_rate": rate, "id_key": id_key,
            "text_key": text_key, "num_clips": len(clips), "ids_present": list(clips.ids)}
  metadata = getattr(info, "metadata", None) or {}
  if "present_ytids" in metadata:  # musiccaps: what this copy of the data set holds
    record["build_present_ids"] = len(metadata["present_ytids"].get(split, []))
  return clips, record
