"""Captions for the synthetic music clips: one sentence naming every attribute.

`PHRASES` is the vocabulary: the phrases each attribute value may appear as. A caption
draws one phrase per attribute and one of several sentence templates, so captions vary in
wording while always describing the clip completely. `phrases_found` reads a caption back,
which is how the tests prove captions and attributes agree.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

# Phrases of different values of one attribute must never contain each other as whole
# words, or `phrases_found` could not tell them apart.
PHRASES: dict[str, dict[Any, tuple[str, ...]]] = {
    "instrument": {
        "sine": ("sine-wave tone", "pure sine synth"),
        "square": ("square-wave lead", "chiptune square synth"),
        "saw": ("sawtooth synth", "buzzy saw lead"),
        "plucked": ("plucked string", "plucked, guitar-like string"),
        "organ": ("organ", "electric organ"),
        "bell": ("bell", "chiming bell"),
    },
    "register": {
        "low": ("low", "deep", "low-pitched"),
        "mid": ("mid-range", "middle-register"),
        "high": ("high", "high-pitched", "high-register"),
    },
    "tempo": {
        "slow": ("slow", "unhurried", "leisurely"),
        "moderate": ("mid-tempo", "moderately paced"),
        "fast": ("fast", "upbeat", "brisk"),
    },
    "mode": {"major": ("major",), "minor": ("minor",)},
    "drums": {
        True: ("with drums", "over a steady drum beat",
               "backed by a kick, snare and hi-hat groove"),
        False: ("without drums", "with no percussion", "with no drums at all"),
    },
    "loudness": {
        "quiet": ("quiet", "soft", "gentle"),
        "medium": ("medium-volume", "moderate-volume"),
        "loud": ("loud", "powerful", "forceful"),
    },
}

# Every template names every attribute, so a caption is a complete description.
_TEMPLATES = (
    "{Loudness}, {tempo} piece in {key} {mode}, played on {a_register} {instrument} {drums}.",
    "{A_tempo} {register} {instrument} melody in {key} {mode}, {drums}; {loudness} overall.",
    "{Loudness} and {tempo}: {a_register} {instrument} plays a {mode}-key tune {drums}.",
    "This {mode} track features {a_register} {instrument}, {tempo} at about {bpm} BPM, {drums}, "
    "and {loudness}.",
    "Instrumental music in {key} {mode} at {bpm} BPM: {a_tempo}, {loudness} line on "
    "{a_register} {instrument}, {drums}.",
)


def _with_article(phrase: str) -> str:
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def write_caption(attributes: dict[str, Any], rng: np.random.Generator) -> str:
  """One natural sentence naming every attribute, phrasing drawn from `rng`."""
  pick = {name: str(rng.choice(PHRASES[name][attributes[name]])) for name in PHRASES}
  words = {
      "instrument": pick["instrument"], "register": pick["register"], "tempo": pick["tempo"],
      "mode": pick["mode"], "drums": pick["drums"], "loudness": pick["loudness"],
      "key": attributes["key"], "bpm": attributes["tempo_bpm"],
      "a_register": _with_article(pick["register"]),
      "a_instrument": _with_article(pick["instrument"]),
      "a_tempo": _with_article(pick["tempo"]),
  }
  words.update({k[0].upper() + k[1:]: _capitalize(str(v)) for k, v in words.items()})
  template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
  return _capitalize(template.format(**words))


def _capitalize(text: str) -> str:
  return text[:1].upper() + text[1:]


def phrases_found(caption: str, attribute: str) -> set:
  """Values of `attribute` whose phrases occur in `caption` as whole words."""
  found = set()
  for value, phrases in PHRASES[attribute].items():
    for phrase in phrases:
      if re.search(r"(?<!\w)" + re.escape(phrase) + r"(?!\w)", caption, re.IGNORECASE):
        found.add(value)
  return found
