"""Procedural music clips with captions that describe them (pure numpy).

`render_clip(index, seed, sample_rate, seconds)` draws a few musical attributes
(timbre, register, key and mode, tempo, drums, loudness) from a generator
seeded by (seed, index), plays a four-bar chord progression with a melody on
top, and writes a caption from the same attributes. The result is a text/music
corpus with a known ground truth: a MuLan trained on it can be checked against
the attributes, and every test and demo has audio without any download.

Synthesis is wavetable-based (one band-limited period per timbre, read at the
note's frequency), so a 5 s clip renders in a few milliseconds.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from musiclm_jax.data import music_captions

INSTRUMENTS = ("sine", "square", "saw", "plucked", "organ", "bell")
# MIDI note range of the key's root; melody and chords sit around it.
REGISTERS = {"low": (36, 47), "mid": (48, 59), "high": (60, 71)}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
TEMPO_BPM = (60, 160)
# Upper bounds (inclusive) of the tempo words, in BPM.
TEMPO_WORDS = (("slow", 85), ("moderate", 119), ("fast", TEMPO_BPM[1]))
# RMS levels; loud stays 16 dB under full scale so peaks rarely need limiting.
LOUDNESS_DBFS = {"quiet": -32.0, "medium": -24.0, "loud": -16.0}
BEATS_PER_BAR = 4
# I-IV-V-I (i-iv-v-i in minor) as scale degrees: the chords make the mode audible.
PROGRESSION = (0, 3, 4, 0)

_TABLE_SIZE = 2048


def tempo_word(bpm: int) -> str:
  for word, upper in TEMPO_WORDS:
    if bpm <= upper:
      return word
  return TEMPO_WORDS[-1][0]


@dataclasses.dataclass(frozen=True)
class AttributeSpace:
  """The values a corpus draws each attribute from (uniformly; tempo from an inclusive range)."""
  instruments: tuple[str, ...] = INSTRUMENTS
  registers: tuple[str, ...] = tuple(REGISTERS)
  modes: tuple[str, ...] = tuple(SCALES)
  tempo_bpm: tuple[int, int] = TEMPO_BPM
  loudness: tuple[str, ...] = tuple(LOUDNESS_DBFS)
  drums: tuple[bool, ...] = (False, True)

  def __post_init__(self):
    for name, known in (("instruments", INSTRUMENTS), ("registers", REGISTERS),
                        ("modes", SCALES), ("loudness", LOUDNESS_DBFS)):
      unknown = [v for v in getattr(self, name) if v not in known]
      if unknown or not getattr(self, name):
        raise ValueError(f"AttributeSpace.{name}: need values from {list(known)}, got "
                         f"{list(getattr(self, name))}")
    low, high = self.tempo_bpm
    if not TEMPO_BPM[0] <= low <= high <= TEMPO_BPM[1]:
      raise ValueError(f"AttributeSpace.tempo_bpm {self.tempo_bpm} must lie in {TEMPO_BPM}")


# Every attribute free: the default corpus.
FULL = AttributeSpace()
# The demo's small world: only what its prompts vary (register, instrument, drums) varies, the
# rest sits at one value, so a few hundred clips show tiny models each of the 12 combinations
# about twenty times.
DEMO = AttributeSpace(instruments=("sine", "square", "plucked"), registers=("low", "high"),
                      modes=("major",), tempo_bpm=(110, 110), loudness=("medium",))
SPACES = {"full": FULL, "demo": DEMO}


def draw_attributes(index: int, seed: int, space: AttributeSpace = FULL) -> dict[str, Any]:
  """The clip's attributes; a pure function of (seed, index, space)."""
  rng = np.random.default_rng([seed, index, 0])
  register = str(rng.choice(list(space.registers)))
  low, high = REGISTERS[register]
  root = int(rng.integers(low, high + 1))
  bpm = int(rng.integers(space.tempo_bpm[0], space.tempo_bpm[1] + 1))
  loudness = str(rng.choice(list(space.loudness)))
  return {
      "instrument": str(rng.choice(list(space.instruments))),
      "register": register,
      "root_midi": root,
      "key": KEY_NAMES[root % 12],
      "mode": str(rng.choice(list(space.modes))),
      "tempo_bpm": bpm,
      "tempo": tempo_word(bpm),
      "drums": bool(rng.choice(list(space.drums))),
      "loudness": loudness,
      "loudness_dbfs": LOUDNESS_DBFS[loudness],
  }


# --- synthesis --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _wavetable(instrument: str, num_harmonics: int) -> np.ndarray:
  """One period (`_TABLE_SIZE` + 1 samples, wrapped) with harmonics up to `num_harmonics`."""
  k = np.arange(1, num_harmonics + 1)
  if instrument == "square":
    amps = np.where(k % 2 == 1, 1.0 / k, 0.0)
  elif instrument in ("saw", "plucked"):
    amps = 1.0 / k
  elif instrument == "organ":  # drawbar-like: octaves and fifths
    drawbars = {1: 1.0, 2: 0.6, 3: 0.4, 4: 0.3, 6: 0.2, 8: 0.15}
    amps = np.array([drawbars.get(int(h), 0.0) for h in k])
  else:
    amps = (k == 1).astype(np.float64)
  phase = 2 * np.pi * np.arange(_TABLE_SIZE + 1) / _TABLE_SIZE
  table = np.sin(np.outer(phase, k)) @ amps
  return (table / np.max(np.abs(table))).astype(np.float32)


def _cycles(freq: float, n: int, sample_rate: int) -> np.ndarray:
  """Phase in cycles, wrapped to [0, 1), float32.

  The phase is accumulated in float64 and wrapped with floor (np.mod is ~10x slower),
  so float32 trigonometry stays accurate for notes of any length.
  """
  phase = np.arange(n) * (freq / sample_rate)
  return (phase - np.floor(phase)).astype(np.float32)


def _read_table(table: np.ndarray, freq: float, n: int, sample_rate: int) -> np.ndarray:
  position = _cycles(freq, n, sample_rate) * np.float32(_TABLE_SIZE)
  lower = position.astype(np.int32)
  frac = position - lower
  below = table[lower]
  return below + frac * (table[lower + 1] - below)


def _sine(freq: float, n: int, sample_rate: int) -> np.ndarray:
  return np.sin(np.float32(2 * np.pi) * _cycles(freq, n, sample_rate))


@functools.lru_cache(maxsize=64)
def _decay_table(tau: float, sample_rate: int) -> np.ndarray:
  # 8 s covers the longest note (a 4-beat chord at 60 BPM plus its ring).
  return np.exp(-np.arange(8 * sample_rate, dtype=np.float32) / np.float32(tau * sample_rate))


def _decay(tau: float, n: int, sample_rate: int) -> np.ndarray:
  """exp(-t / tau) for n samples; notes slice a cached curve instead of recomputing exp."""
  table = _decay_table(tau, sample_rate)
  if n <= len(table):
    return table[:n]
  return np.exp(-np.arange(n, dtype=np.float32) / np.float32(tau * sample_rate))


def _harmonics_below_nyquist(freq: float, sample_rate: int) -> int:
  # 0.45 rather than 0.5 keeps the top harmonic clear of the resampler's roll-off.
  return max(1, min(32, int(0.45 * sample_rate / freq)))


def _shape_ends(wave: np.ndarray, sample_rate: int, release: bool) -> np.ndarray:
  """5 ms linear attack and (sustained timbres) 30 ms release, applied to the ends only."""
  attack = min(len(wave), int(0.005 * sample_rate))
  wave[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False, dtype=np.float32)
  if release:
    tail = min(len(wave), int(0.03 * sample_rate))
    wave[len(wave) - tail:] *= np.linspace(1.0, 0.0, tail, dtype=np.float32)
  return wave


def _note(instrument: str, freq: float, duration: float, sample_rate: int) -> np.ndarray:
  """A single note with its envelope; decaying timbres ring past `duration`."""
  ring = {"plucked": 1.2, "bell": 2.0}.get(instrument, 0.0)
  n = max(1, int((duration + ring) * sample_rate))
  if instrument == "bell":
    # Inharmonic partials, higher ones dying faster: what makes a bell a bell.
    out = np.zeros(n, np.float32)
    for ratio, weight, tau in ((1.0, 1.0, 0.9), (2.0, 0.6, 0.6), (2.76, 0.5, 0.4),
                               (5.4, 0.3, 0.25), (8.93, 0.2, 0.15)):
      if freq * ratio < 0.45 * sample_rate:
        out += np.float32(weight) * _sine(freq * ratio, n, sample_rate) * _decay(
            tau, n, sample_rate)
    return _shape_ends(out, sample_rate, release=False)
  harmonics = _harmonics_below_nyquist(freq, sample_rate)
  if instrument == "plucked":
    # A bright attack that decays into a mellow tone, like a string's upper partials.
    bright = _read_table(_wavetable("plucked", harmonics), freq, n, sample_rate)
    mellow = _sine(freq, n, sample_rate)
    out = bright * _decay(0.08, n, sample_rate) + np.float32(0.6) * mellow * _decay(
        0.4, n, sample_rate)
    return _shape_ends(out, sample_rate, release=False)
  wave = _read_table(_wavetable(instrument, harmonics), freq, n, sample_rate)
  return _shape_ends(wave, sample_rate, release=True)


def _midi_to_hz(note: float) -> float:
  return 440.0 * 2.0 ** ((note - 69) / 12)


def _add(out: np.ndarray, signal: np.ndarray, start: int) -> None:
  end = min(len(out), start + len(signal))
  if end > start:
    out[start:end] += signal[:end - start]


def _drum_sounds(rng: np.random.Generator, sample_rate: int) -> dict[str, np.ndarray]:
  def t(seconds):
    return np.arange(int(seconds * sample_rate)) / sample_rate

  tk, ts, th = t(0.3), t(0.2), t(0.06)
  # Kick: a sine whose pitch falls quickly, the usual electronic kick.
  kick_hz = 45.0 + 75.0 * np.exp(-tk / 0.04)
  kick = np.sin(2 * np.pi * np.cumsum(kick_hz) / sample_rate) * np.exp(-tk / 0.15)
  snare = (0.6 * rng.standard_normal(len(ts)) * np.exp(-ts / 0.08)
           + 0.4 * np.sin(2 * np.pi * 180.0 * ts) * np.exp(-ts / 0.05))
  # Differenced noise is high-passed noise: a cheap hi-hat.
  hat = 0.3 * np.diff(rng.standard_normal(len(th) + 1)) * np.exp(-th / 0.02)
  return {"kick": kick, "snare": snare, "hat": hat}


def _render_music(attributes, rng, sample_rate: int, num_samples: int) -> np.ndarray:
  instrument, root = attributes["instrument"], attributes["root_midi"]
  scale = SCALES[attributes["mode"]]
  beat = 60.0 / attributes["tempo_bpm"]
  beat_samples = int(round(beat * sample_rate))
  out = np.zeros(num_samples, np.float32)

  def pitch(degree):  # scale degree (may exceed 7) -> MIDI note
    return root + 12 * (degree // 7) + scale[degree % 7]

  num_bars = -(-num_samples // (BEATS_PER_BAR * beat_samples))
  melody_degree = 7 + int(rng.integers(0, 5))  # an octave over the root
  for bar in range(num_bars):
    bar_start = bar * BEATS_PER_BAR * beat_samples
    chord = PROGRESSION[bar % len(PROGRESSION)]
    for third in (0, 2, 4):  # a triad on the chord's degree, under the melody
      _add(out, 0.3 * _note(instrument, _midi_to_hz(pitch(chord + third)),
                            BEATS_PER_BAR * beat, sample_rate), bar_start)
    position = 0.0
    while position < BEATS_PER_BAR:
      length = 0.5 if rng.random() < 0.4 else 1.0
      melody_degree = int(np.clip(melody_degree + rng.integers(-2, 3), 4, 13))
      velocity = 0.8 + 0.2 * rng.random()
      _add(out, velocity * _note(instrument, _midi_to_hz(pitch(melody_degree)), length * beat,
                                 sample_rate), bar_start + int(position * beat_samples))
      position += length
  return out


def _render_drums(rng, beat: float, sample_rate: int, num_samples: int) -> np.ndarray:
  sounds = _drum_sounds(rng, sample_rate)
  out = np.zeros(num_samples, np.float32)
  half_beat = beat * sample_rate / 2
  for eighth in range(int(num_samples / half_beat) + 1):
    start = int(round(eighth * half_beat))
    _add(out, sounds["hat"], start)
    if eighth % 2 == 0:  # kick on beats 1 and 3, snare on the backbeat
      _add(out, sounds["kick" if (eighth // 2) % 2 == 0 else "snare"], start)
  return out


def _rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x)))) or 1.0


def render_clip(index: int, seed: int, sample_rate: int, seconds: float,
                space: AttributeSpace = FULL) -> tuple[np.ndarray, str, dict[str, Any]]:
  """Clip `index` of the corpus `seed` drawn from `space`.

  Returns (wav float32 [round(seconds * sample_rate)] in [-1, 1], caption, attributes).
  The same arguments always give the same clip; attributes and audio do not depend on the
  caption templates (the caption draws from its own generator).
  """
  if sample_rate <= 0 or seconds <= 0:
    raise ValueError(f"need a positive sample_rate and seconds, got {sample_rate}, {seconds}")
  attributes = draw_attributes(index, seed, space)
  num_samples = int(round(seconds * sample_rate))
  rng = np.random.default_rng([seed, index, 1])
  wav = _render_music(attributes, rng, sample_rate, num_samples)
  wav /= _rms(wav)
  if attributes["drums"]:
    drums = _render_drums(rng, 60.0 / attributes["tempo_bpm"], sample_rate, num_samples)
    wav += 0.7 * drums / _rms(drums)
  wav *= 10.0 ** (attributes["loudness_dbfs"] / 20.0) / _rms(wav)
  peak = np.max(np.abs(wav))
  if peak > 0.99:  # keep the waveform in range; the level word stays the same
    wav *= 0.99 / peak
  caption = music_captions.write_caption(attributes, np.random.default_rng([seed, index, 2]))
  return wav.astype(np.float32), caption, attributes
