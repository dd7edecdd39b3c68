"""`rendered_scores`: music21's corpus played by General MIDI instruments, captioned (TFDS).

Real compositions (Bach chorales, Palestrina masses, Monteverdi madrigals, string quartets,
Essen folk songs, O'Neill / Ryan / Aird fiddle tunes) rendered offline with the TimGM6mb bank
through tinysoundfont (score_render.py). Per clip, drawn from a generator seeded by the config
seed, the work and the clip number: the instrumentation (score_captions.ENSEMBLES, one program
per voice), tempo in beats per minute, transposition, loudness, and where in the work the clip
starts (on a beat). The same config always gives the same bytes.

Splits are by work (score_corpus.Work.split_key: a folk tune by its title, since the
collections share tunes), so no work is in two splits:

  train, validation  the config's collections, ENSEMBLES
  heldout            works of `heldout_collections` (ENSEMBLES), and a share of the other
                     collections' works played on HELDOUT_ENSEMBLES: the generalisation set;
                     attributes.heldout says which ("collection" / "instruments")

  audio        int16 PCM [seconds * sample_rate] (tfds_audio.PcmAudio)
  caption      one sentence: source, form, instruments, voices, tempo, key, mode, meter
  clip_id      "<work_id>:<clip number>";   work_id  score_corpus.Work.work_id
  attributes   what the caption was written from, and what the render holds (pitch range,
               onsets per second, polyphony: what a transcription should find)

Scores that do not parse, hold no pitched notes, or are shorter than a clip at its tempo are
skipped and listed in `info.metadata` (tfds_audio.SkipLog), never fatal.

    python -m musiclm_jax.build_data rendered_scores/demo
"""
from __future__ import annotations

import dataclasses
import os
from typing import Union

import numpy as np
import tensorflow_datasets as tfds

from musiclm_jax.data import music_synth
from musiclm_jax.data import score_captions
from musiclm_jax.data import score_corpus
from musiclm_jax.data import score_render
from musiclm_jax.data import tfds_audio

NAME = "rendered_scores"
VERSION = "1.0.0"
SPLITS = ("train", "validation", "heldout")
# Tries at a clip start with notes in it before the clip counts as empty (long rests).
_START_TRIES = 8


@dataclasses.dataclass(eq=False)
class RenderedScoresConfig(tfds.core.BuilderConfig):
  """Which works (collections, at most `works_per_collection` of each, 0: all), how many
  clips of what length per work, and the ranges the per-clip draws come from."""
  sample_rate: int = 16000
  seconds: float = 10.0
  collections: tuple[str, ...] = ("bach", "palestrina", "ryansMammoth", "oneills1850",
                                  "essenFolksong", "mozart", "haydn", "beethoven", "josquin",
                                  "trecento")
  heldout_collections: tuple[str, ...] = ("monteverdi", "airdsAirs")
  works_per_collection: int = 0
  clips_per_work: int = 3
  validation_share: float = 0.08
  heldout_instrument_share: float = 0.04
  tempo_bpm: tuple[int, int] = (56, 144)
  transpose: tuple[int, int] = (-5, 6)
  loudness_dbfs: tuple[float, float] = (-30.0, -16.0)
  seed: int = 0


_SMALL = ("bach", "palestrina", "ryansMammoth")
BUILDER_CONFIGS = (
    RenderedScoresConfig(
        name="tiny", description="16 kHz, 4 s clips of 12 + 2 held-out works: tests",
        sample_rate=16000, seconds=4.0, collections=("bach", "ryansMammoth"),
        heldout_collections=("monteverdi",), works_per_collection=6, clips_per_work=1,
        validation_share=0.25, heldout_instrument_share=0.2),
    RenderedScoresConfig(
        name="demo", description="16 kHz, 4 s clips, 2 per work of 150 works of each of "
        "Bach, Palestrina and Ryan's collection, Monteverdi held out: the demo's size",
        sample_rate=16000, seconds=4.0, collections=_SMALL, heldout_collections=("monteverdi",),
        works_per_collection=150, clips_per_work=2, validation_share=0.1,
        heldout_instrument_share=0.05),
    RenderedScoresConfig(name="full_16k", description="16 kHz, 10 s clips, 3 per work, "
                         "every work of the listed collections (tens of hours)",
                         sample_rate=16000),
    RenderedScoresConfig(name="full_24k", description="24 kHz (SoundStream), 10 s clips, 3 "
                         "per work, every work of the listed collections", sample_rate=24000),
)


def attribute_features() -> tfds.features.FeaturesDict:
  text = tfds.features.Text
  return tfds.features.FeaturesDict({
      "collection": text(), "composer": text(), "title": text(), "form": text(),
      "source": text(), "ensemble": text(), "instruments": tfds.features.Sequence(text()),
      "programs": tfds.features.Sequence(np.int32), "num_voices": np.int32,
      "tempo_bpm": np.int32, "tempo": text(), "key": text(), "mode": text(), "meter": text(),
      "transpose": np.int32, "loudness_dbfs": np.float32, "start_seconds": np.float32,
      "pitch_low": np.int32, "pitch_high": np.int32, "notes_per_second": np.float32,
      "polyphony": np.float32, "heldout": text(),
  })


def assign_split(work: score_corpus.Work, config: RenderedScoresConfig) -> tuple[str, str]:
  """(split, held-out reason '' / 'collection' / 'instruments') of a work."""
  if work.collection in config.heldout_collections:
    return "heldout", "collection"
  share = score_corpus.stable_fraction(config.seed, "split", work.split_key)
  if share < config.validation_share:
    return "validation", ""
  if share < config.validation_share + config.heldout_instrument_share:
    return "heldout", "instruments"
  return "train", ""


def select_works(config: RenderedScoresConfig) -> dict[str, list[tuple[score_corpus.Work, str]]]:
  """{split: [(work, held-out reason)]}, each split sorted by work id."""
  by_split = {split: [] for split in SPLITS}
  for collection in tuple(config.collections) + tuple(config.heldout_collections):
    works = score_corpus.list_works(collection)
    if config.works_per_collection:
      works = sorted(works, key=lambda w: score_corpus.stable_fraction(
          config.seed, "pick", w.work_id))[:config.works_per_collection]
    for work in works:
      split, reason = assign_split(work, config)
      by_split[split].append((work, reason))
  return {split: sorted(items, key=lambda item: item[0].work_id)
          for split, items in by_split.items()}


class ClipError(ValueError):
  """A work that cannot give a clip; `reason` is a tfds_audio skip reason."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def analyse_key(parts) -> tuple[int, str]:
  """(tonic pitch class, 'major' / 'minor') of the notes, by music21's key analysis."""
  from music21 import note, stream  # pylint: disable=import-outside-toplevel
  flat = stream.Stream()
  for notes in parts:
    for n in notes:
      flat.insert(n.start, note.Note(n.pitch, quarterLength=max(n.end - n.start, 1 / 64)))
  key = flat.analyze("key")
  return key.tonic.pitchClass, ("minor" if key.mode == "minor" else "major")


def make_clip(parts, description: dict, meter: str, rng: np.random.Generator,
              config: RenderedScoresConfig, ensembles) -> tuple[np.ndarray, dict]:
  """One clip of a parsed work: draws, crop, render, attributes. Raises ClipError."""
  ensemble = ensembles[int(rng.integers(len(ensembles)))]
  bpm = int(rng.integers(config.tempo_bpm[0], config.tempo_bpm[1] + 1))
  shift = int(rng.integers(config.transpose[0], config.transpose[1] + 1))
  dbfs = round(float(rng.uniform(*config.loudness_dbfs)), 1)
  beat = score_render.beat_quarters(meter)
  seconds_per_quarter = 60.0 / (bpm * beat)
  clip_quarters = config.seconds / seconds_per_quarter
  length = max(n.end for notes in parts for n in notes)
  if length < clip_quarters:
    raise ClipError(tfds_audio.TOO_SHORT, f"too short: {length * seconds_per_quarter:.1f} s at "
                    f"{bpm} BPM, the clip is {config.seconds} s")
  last_beat = int((length - clip_quarters) // beat)
  for _ in range(_START_TRIES):
    start = int(rng.integers(0, last_beat + 1)) * beat
    window = [w for w in score_render.window(parts, start, start + clip_quarters) if w]
    if window:
      break
  else:
    raise ClipError(tfds_audio.EMPTY, f"no notes in {_START_TRIES} tries at a clip start")
  tonic, mode = analyse_key(window)
  window = score_render.transpose(window, shift)
  programs = ensemble.assign(len(window))
  wav = score_render.render(window, programs, seconds_per_quarter, config.seconds,
                            config.sample_rate)
  wav = score_render.set_level(wav, dbfs)
  stats = score_render.note_statistics(window, seconds_per_quarter, config.seconds)
  attributes = {
      **description, "ensemble": ensemble.name,
      "instruments": score_captions.instrument_words(programs), "programs": programs,
      "num_voices": len(window), "tempo_bpm": bpm, "tempo": music_synth.tempo_word(bpm),
      "key": score_captions.key_name(tonic + shift, mode), "mode": mode, "meter": meter,
      "transpose": shift, "loudness_dbfs": dbfs,
      "start_seconds": round(start * seconds_per_quarter, 3), **stats,
  }
  return wav, attributes


def work_clips(work: score_corpus.Work, heldout: str, config: RenderedScoresConfig):
  """Yields (clip number, wav, caption, attributes) or (clip number, ClipError) of a work;
  raises ClipError when the whole work is unusable (unparseable, no pitched notes)."""
  try:
    score = score_corpus.parse(work)
    parts = score_render.score_parts(score)
    meter = score_render.main_meter(score)
    description = score_corpus.describe(work, score)
  except Exception as error:  # pylint: disable=broad-except
    # music21 raises many types on bad files; any of them means the score is unusable.
    raise ClipError(tfds_audio.UNDECODABLE, f"{type(error).__name__}: {error}") from error
  if not parts:
    raise ClipError(tfds_audio.EMPTY, "no pitched notes in any part")
  ensembles = (score_captions.HELDOUT_ENSEMBLES if heldout == "instruments"
               else score_captions.ENSEMBLES)
  for clip in range(config.clips_per_work):
    key = [config.seed, int(score_corpus.stable_fraction("clip", work.work_id) * 2**32), clip]
    try:
      wav, attributes = make_clip(parts, {**description, "collection": work.collection,
                                          "heldout": heldout}, meter,
                                  np.random.default_rng(key + [0]), config, ensembles)
    except ClipError as error:
      yield clip, error
      continue
    except Exception as error:  # pylint: disable=broad-except
      # music21's analysis can fail on odd notes; one bad clip must not stop a build.
      yield clip, ClipError(tfds_audio.UNDECODABLE, f"{type(error).__name__}: {error}")
      continue
    # Its own generator: wording never changes what is rendered.
    caption = score_captions.write_caption(attributes, np.random.default_rng(key + [1]))
    yield clip, wav, caption, attributes


class RenderedScores(tfds.core.GeneratorBasedBuilder):
  """Corpus scores played on General MIDI instruments, with captions from their metadata."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "audio": tfds_audio.PcmAudio(self.builder_config.sample_rate),
            "caption": tfds.features.Text(), "clip_id": tfds.features.Text(),
            "work_id": tfds.features.Text(), "attributes": attribute_features(),
        }),
        supervised_keys=("audio", "caption"),
        homepage="https://web.mit.edu/music21/",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is in the installed packages
    config = self.builder_config
    by_split = select_works(config)
    self._skips = tfds_audio.SkipLog(NAME)
    self.info.metadata["listed"] = {s: len(w) for s, w in by_split.items()}
    self.info.metadata["heldout_collections"] = list(config.heldout_collections)
    self.info.metadata["heldout_ensembles"] = [e.name for e in score_captions.HELDOUT_ENSEMBLES]
    self._skips.write_to(self.info.metadata)
    # TFDS refuses to finalise an empty split, so a config may leave one out.
    return {split: self._generate_examples(split, works) for split, works in by_split.items()
            if works}

  def _generate_examples(self, split, works):
    written = 0
    for work, heldout in works:
      try:
        for clip, *result in work_clips(work, heldout, self.builder_config):
          if isinstance(result[0], ClipError):
            self._skips.skip(split, f"{work.work_id}:{clip}", work.path, result[0].reason,
                             str(result[0]))
            continue
          wav, caption, attributes = result
          written += 1
          clip_id = f"{work.work_id}:{clip}"
          yield clip_id, {"audio": tfds_audio.to_pcm16(wav), "caption": caption,
                          "clip_id": clip_id, "work_id": work.work_id,
                          "attributes": attributes}
      except ClipError as error:
        self._skips.skip(split, work.work_id, work.path, error.reason, str(error))
    if not written:
      raise self._skips.nothing_left(split)
    self._skips.write_to(self.info.metadata)


def config_by_name(name: str) -> RenderedScoresConfig:
  return tfds_audio.config_by_name(BUILDER_CONFIGS, NAME, name)


def ensure_built(config: Union[str, RenderedScoresConfig],
                 data_dir: Union[str, os.PathLike]) -> RenderedScores:
  """Builds `config` under `data_dir` unless it is there already; returns its builder."""
  if isinstance(config, str):
    config = config_by_name(config)
  return tfds_audio.prepared(RenderedScores(config=config, data_dir=os.fspath(data_dir)))
