"""Instrumentations of rendered scores and the captions written from a clip's attributes.

An ensemble is a list of General MIDI programs from the top part down: the top part takes the
first, the bottom part the last, the parts between spread over the middle ones (a string
quartet on a five-voice madrigal: violin, violin, viola, viola, cello; on a folk tune, the
violin alone). The caption names the instruments that actually sounded.

A caption names every attribute a listener could check: where the work comes from (composer
or collection), its form, the instruments, the number of voices, tempo word and BPM, key and
mode, meter. Sentence templates and phrasings vary; `phrases_found` reads a caption back.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

# General MIDI program (0-based) -> the instrument word captions and judges use.
INSTRUMENT_WORDS = {
    0: "piano", 6: "harpsichord", 12: "marimba", 19: "organ", 21: "accordion", 24: "guitar",
    40: "violin", 41: "viola", 42: "cello", 46: "harp", 48: "strings", 52: "choir",
    61: "brass", 68: "oboe", 70: "bassoon", 71: "clarinet", 73: "flute", 104: "sitar",
}


@dataclasses.dataclass(frozen=True)
class Ensemble:
  name: str
  programs: tuple[int, ...]  # top part first

  def __post_init__(self):
    unknown = [p for p in self.programs if p not in INSTRUMENT_WORDS]
    if not self.programs or unknown:
      raise ValueError(f"ensemble {self.name!r}: programs {unknown or '()'} have no "
                       "instrument word in INSTRUMENT_WORDS")

  def assign(self, num_parts: int) -> list[int]:
    """The program of each of `num_parts` parts, top first."""
    if num_parts <= 0:
      return []
    first, last, middle = self.programs[0], self.programs[-1], self.programs[1:-1]
    if num_parts == 1:
      return [first]
    inner = num_parts - 2
    between = [middle[min(len(middle) - 1, int((i + 0.5) * len(middle) / inner))] if middle else last
               for i in range(inner)]
    return [first, *between, last]


# What train and validation clips are played on.
ENSEMBLES = tuple(Ensemble(n, p) for n, p in (
    ("piano", (0,)), ("harpsichord", (6,)), ("organ", (19,)), ("guitar", (24,)),
    ("harp", (46,)), ("strings", (48,)), ("string quartet", (40, 40, 41, 42)),
    ("choir", (52,)), ("brass", (61,)), ("woodwinds", (73, 68, 71, 70)),
    ("flute and strings", (73, 48)), ("violin and piano", (40, 0)),
    ("flute and harpsichord", (73, 6)),
))
# Never heard in training: the held-out split's instrument set.
HELDOUT_ENSEMBLES = tuple(Ensemble(n, p) for n, p in (
    ("marimba", (12,)), ("accordion", (21,)), ("sitar", (104,)),
))
ENSEMBLES_BY_NAME = {e.name: e for e in ENSEMBLES + HELDOUT_ENSEMBLES}

KEY_NAMES = {
    "major": ("C", "D-flat", "D", "E-flat", "E", "F", "F-sharp", "G", "A-flat", "A", "B-flat", "B"),
    "minor": ("C", "C-sharp", "D", "E-flat", "E", "F", "F-sharp", "G", "G-sharp", "A", "B-flat",
              "B"),
}
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")

# Phrases of different values of one attribute never contain each other as whole words.
TEMPO_PHRASES = {"slow": ("slow", "unhurried", "stately"), "moderate": ("moderate", "walking-pace"),
                 "fast": ("fast", "lively", "brisk")}


def instrument_words(programs: Sequence[int]) -> list[str]:
  """Distinct instrument words of the programs, in order of first appearance (top first)."""
  words = []
  for program in programs:
    word = INSTRUMENT_WORDS[int(program)]
    if word not in words:
      words.append(word)
  return words


def key_name(tonic_pitch_class: int, mode: str) -> str:
  return KEY_NAMES[mode][tonic_pitch_class % 12]


def _join(words: Sequence[str]) -> str:
  return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _instruments_phrase(words: Sequence[str], rng) -> str:
  if words == ["choir"]:
    return str(rng.choice(["sung by a choir", "for choir", "sung by choir voices"]))
  if words == ["strings"]:
    return str(rng.choice(["played by strings", "for strings"]))
  if words == ["brass"]:
    return str(rng.choice(["played by brass", "for brass ensemble"]))
  return str(rng.choice(["played on ", "played by ", "for "])) + _join(words)


def _voices_phrase(num_voices: int, rng) -> str:
  if num_voices <= 1:
    return str(rng.choice(["single-line", "one-voice", "solo melodic"]))
  number = _NUMBER_WORDS[num_voices] if num_voices < len(_NUMBER_WORDS) else str(num_voices)
  return number + str(rng.choice(["-voice", "-part"]))


def _article(phrase: str) -> str:
  vowel = phrase[:1].lower() in "aeiou" and not phrase.lower().startswith("one")
  return ("an " if vowel else "a ") + phrase


_TEMPLATES = (
    "{A_voices} {form} {source}, {instruments}, {tempo} at {bpm} BPM, in {key} {mode}, {meter}.",
    "{Tempo} {form} {source} in {key} {mode} ({meter}, {bpm} BPM): {voices} texture "
    "{instruments}.",
    "{Instruments_cap}: {a_voices} {form} {source} in {key} {mode}, {meter}, {tempo} at about "
    "{bpm} BPM.",
    "This {form} {source} is in {key} {mode} and {meter}; {voices} writing {instruments}, "
    "{tempo}, {bpm} BPM.",
    "{Key} {mode} {form} {source}, {meter}, {a_tempo} {bpm} BPM, {voices}, {instruments}.",
)


def meter_phrase(meter: str, rng) -> str:
  if not meter:
    return "in free time"
  return str(rng.choice([f"in {meter} time", f"{meter} meter", f"in {meter}"]))


def write_caption(attributes: dict[str, Any], rng: np.random.Generator) -> str:
  """One sentence naming source, form, instruments, voices, tempo, key, mode and meter."""
  tempo = str(rng.choice(TEMPO_PHRASES[attributes["tempo"]]))
  voices = _voices_phrase(int(attributes["num_voices"]), rng)
  instruments = _instruments_phrase(list(attributes["instruments"]), rng)
  words = {
      "form": attributes["form"], "source": attributes["source"], "instruments": instruments,
      "tempo": tempo, "bpm": int(attributes["tempo_bpm"]), "key": attributes["key"],
      "mode": attributes["mode"], "meter": meter_phrase(attributes["meter"], rng),
      "voices": voices, "a_voices": _article(voices), "a_tempo": _article(tempo),
  }
  words.update({k[0].upper() + k[1:]: _capitalize(str(v)) for k, v in words.items()})
  words["Instruments_cap"] = _capitalize(instruments)
  template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
  return _capitalize(re.sub(r"\s+", " ", template.format(**words)))


def _capitalize(text: str) -> str:
  return text[:1].upper() + text[1:]


def instruments_found(caption: str) -> set[str]:
  """Instrument words a caption names, as whole words."""
  return {w for w in INSTRUMENT_WORDS.values()
          if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", caption, re.IGNORECASE)}


def tempo_found(caption: str) -> set[str]:
  return {value for value, phrases in TEMPO_PHRASES.items() for p in phrases
          if re.search(r"(?<!\w)" + re.escape(p) + r"(?!\w)", caption, re.IGNORECASE)}
