"""music21 scores -> timed notes per part -> audio through a General MIDI soundfont.

Scores come from music21's own corpus (parsed offline); sound from the General MIDI bank
`TimGM6mb.sf2` that pretty-midi's wheel ships, played by tinysoundfont (a C synth, no system
library). Times stay in quarter lengths until `render`, so one parse serves any tempo.

Real scores are messy, and everything here is written for that: parts without notes,
percussion parts (unpitched notes are left out: the bank's drum kit would need channel 10 and
a drum map the corpus never uses), grace notes (no duration in the score: left out), chords in
one voice (every pitch sounds), ties (merged, so a tied note is struck once), pickup bars and
odd time signatures (ignored: clips are cut by time, the meter is the one most bars carry).
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

from musiclm_jax.core import audio

# Channel 10 (index 9) is General MIDI's percussion channel: never a melodic part.
_MELODIC_CHANNELS = tuple(c for c in range(16) if c != 9)
DEFAULT_VELOCITY = 90
LOWEST_MIDI, HIGHEST_MIDI = 21, 108  # the piano's keys; the bank's samples cover them
PEAK = 0.99


@dataclasses.dataclass(frozen=True)
class Note:
  start: float     # quarter lengths from the start of the work
  end: float
  pitch: int       # MIDI
  velocity: int


def soundfont_path() -> str:
  """pretty-midi's General MIDI bank (found without importing pretty_midi, which pulls mido)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.find_spec("pretty_midi")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the `pretty-midi` package is not installed; its wheel ships the "
                            "TimGM6mb.sf2 soundfont the scores are rendered with")
  path = os.path.join(list(spec.submodule_search_locations)[0], "TimGM6mb.sf2")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing from the pretty-midi install")
  return path


@functools.lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
  with open(soundfont_path(), "rb") as f:
    return f.read()


# --- score -> notes -----------------------------------------------------------------------------

def part_notes(part) -> list[Note]:
  """The pitched notes of one music21 part (or any stream), ties merged, sorted by onset."""
  from music21 import chord, note  # pylint: disable=import-outside-toplevel
  stream = part.stripTies(inPlace=False) if hasattr(part, "stripTies") else part
  notes = []
  for element in stream.flatten().notes:
    if not isinstance(element, (note.Note, chord.Chord)):
      continue  # Unpitched, PercussionChord: no pitch to play
    length = float(element.duration.quarterLength)
    if element.duration.isGrace or length <= 0:
      continue
    velocity = element.volume.velocity if element.volume.velocity else DEFAULT_VELOCITY
    start = float(element.offset)
    for pitch in element.pitches:
      midi = fold_onto_keyboard(int(round(pitch.ps)))  # microtones round to the nearest key
      notes.append(Note(start, start + length, midi, int(velocity)))
  notes.sort(key=lambda n: (n.start, n.pitch))
  return notes


def score_parts(score) -> list[list[Note]]:
  """Notes per part, top staff first, parts without pitched notes left out."""
  parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
  return [notes for notes in (part_notes(p) for p in parts) if notes]


def main_meter(score) -> str:
  """The time signature most bars of the first part carry ('' if none): pickup and closing
  bars of abc tunes often declare odd ones (1/32, 3/16) that describe nothing."""
  from music21 import meter  # pylint: disable=import-outside-toplevel
  part = score.parts[0] if hasattr(score, "parts") and len(score.parts) else score
  counts = collections.Counter()
  current = None
  measures = list(part.getElementsByClass("Measure"))
  for measure in measures:
    if measure.timeSignature is not None:
      current = measure.timeSignature.ratioString
    if current:
      counts[current] += 1
  if not measures:
    signatures = list(part.recurse().getElementsByClass(meter.TimeSignature))
    counts.update(s.ratioString for s in signatures)
  return counts.most_common(1)[0][0] if counts else ""


def beat_quarters(meter_string: str) -> float:
  """Quarter lengths per counted beat of a meter ('6/8' -> 1.5: dotted quarters), 1 if none."""
  if not meter_string:
    return 1.0
  from music21 import meter  # pylint: disable=import-outside-toplevel
  try:
    return float(meter.TimeSignature(meter_string).beatDuration.quarterLength) or 1.0
  except Exception:  # pylint: disable=broad-except
    return 1.0


def window(parts: Sequence[Sequence[Note]], start: float, end: float) -> list[list[Note]]:
  """Per part, the notes sounding in [start, end) quarter lengths, clipped to it and shifted to
  start at 0 (a note struck before the window is struck at its start)."""
  out = []
  for notes in parts:
    out.append([Note(max(n.start, start) - start, min(n.end, end) - start, n.pitch, n.velocity)
                for n in notes if n.start < end and n.end > start])
  return out


def fold_onto_keyboard(pitch: int) -> int:
  """A MIDI pitch off the piano's keys, moved by octaves onto them."""
  while pitch < LOWEST_MIDI:
    pitch += 12
  while pitch > HIGHEST_MIDI:
    pitch -= 12
  return pitch


def transpose(parts, semitones: int) -> list[list[Note]]:
  """Shifted by `semitones`; a note pushed off the keyboard moves by octaves back onto it."""
  return [[dataclasses.replace(n, pitch=fold_onto_keyboard(n.pitch + semitones)) for n in notes]
          for notes in parts]


def note_statistics(parts: Sequence[Sequence[Note]], seconds_per_quarter: float,
                    seconds: float) -> dict:
  """What a transcription of the render should find: pitch range, onsets per second, and the
  mean number of notes sounding while any does (one per distinct pitch)."""
  notes = [n for p in parts for n in p]
  if not notes:
    return {"pitch_low": 0, "pitch_high": 0, "notes_per_second": 0.0, "polyphony": 0.0}
  frames = np.zeros((int(np.ceil(seconds * 100)), 128), bool)  # 10 ms grid
  for n in notes:
    a = int(n.start * seconds_per_quarter * 100)
    b = max(a + 1, int(n.end * seconds_per_quarter * 100))
    frames[a:b, n.pitch] = True
  sounding = frames.sum(axis=1)
  onsets = {(round(n.start, 6), n.pitch) for n in notes}
  return {"pitch_low": min(n.pitch for n in notes), "pitch_high": max(n.pitch for n in notes),
          "notes_per_second": len(onsets) / seconds,
          "polyphony": float(sounding[sounding > 0].mean()) if sounding.any() else 0.0}


# --- notes -> audio -----------------------------------------------------------------------------

def render(parts: Sequence[Sequence[Note]], programs: Sequence[int], seconds_per_quarter: float,
           seconds: float, sample_rate: int) -> np.ndarray:
  """Mono float32 [round(seconds * sample_rate)]: part i played by General MIDI `programs[i]`.

  A fresh synthesizer per call, so a clip never depends on what was rendered before it (the
  build stays deterministic). Parts beyond 15 share channels.
  """
  if len(programs) != len(parts):
    raise ValueError(f"{len(parts)} parts but {len(programs)} programs")
  import tinysoundfont  # pylint: disable=import-outside-toplevel
  synth = tinysoundfont.Synth(samplerate=sample_rate)
  sfid = synth.sfload(_soundfont_bytes())
  events = []  # (sample, order, kind, channel, pitch, velocity); note-offs before note-ons
  for index, (notes, program) in enumerate(zip(parts, programs)):
    channel = _MELODIC_CHANNELS[index % len(_MELODIC_CHANNELS)]
    synth.program_select(channel, sfid, 0, int(program))
    for n in notes:
      on = int(round(n.start * seconds_per_quarter * sample_rate))
      off = int(round(n.end * seconds_per_quarter * sample_rate))
      events.append((on, 1, channel, n.pitch, n.velocity))
      events.append((off, 0, channel, n.pitch, 0))
  total = int(round(seconds * sample_rate))
  events.sort()
  chunks, position = [], 0
  for sample, is_on, channel, pitch, velocity in events:
    if sample >= total:
      break
    if sample > position:
      chunks.append(_generate(synth, sample - position))
      position = sample
    if is_on:
      synth.noteon(channel, pitch, max(1, min(127, velocity)))
    else:
      synth.noteoff(channel, pitch)
  if total > position:
    chunks.append(_generate(synth, total - position))
  return np.concatenate(chunks) if chunks else np.zeros((total,), np.float32)


def _generate(synth, samples: int) -> np.ndarray:
  stereo = np.frombuffer(synth.generate(samples), dtype=np.float32).reshape(-1, 2)
  return stereo.mean(axis=1)


def set_level(wav: np.ndarray, dbfs: float) -> np.ndarray:
  """RMS at `dbfs`, then scaled down if a peak would clip (sampled attacks can be spiky)."""
  wav = audio.loudness_normalize(wav.astype(np.float32), dbfs, max_gain_db=60.0)
  peak = float(np.max(np.abs(wav))) if wav.size else 0.0
  if peak > PEAK:
    wav = wav * (PEAK / peak)
  return wav.astype(np.float32)
