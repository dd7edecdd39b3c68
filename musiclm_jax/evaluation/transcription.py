"""Note transcription with basic-pitch (Bittner et al., 2022), an independent judge of pitch.

The `basic-pitch` wheel (Apache 2.0) ships its trained network as ONNX (`nmp.onnx`); it runs
here on onnxruntime. The package itself is never imported: its modules pull in TensorFlow
versions, resampy and mir_eval we do not install (scripts/venv.sh installs it without
dependencies). What it does is redone here: audio at 22050 Hz in 2 s windows overlapping by
30 frames, note and onset posteriors at 86 frames/s over the 88 piano keys, and notes decoded
as basic-pitch's `output_to_notes_polyphonic` does (an onset peak above `onset_threshold`
starts a note; it lasts while the note posterior stays above `frame_threshold`, allowing
`energy_tol` frames below; notes shorter than `min_note_frames` are dropped). Its "melodia
trick" (notes without an onset, from leftover energy) and the inferred onsets are left out:
they add notes in reverberant tails, and the judges below ask about struck notes.

  notes = Transcriber.load().transcribe(wav, sample_rate)   # [(start_s, end_s, midi)]
  note_features(notes, seconds)    # pitch range, register, notes per second, polyphony
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Optional, Sequence

import numpy as np
import scipy.signal

from musiclm_jax.core import audio

SAMPLE_RATE = 22050
FFT_HOP = 256
WINDOW_SAMPLES = 2 * SAMPLE_RATE - FFT_HOP       # basic-pitch's AUDIO_N_SAMPLES
OVERLAP_FRAMES = 30
OVERLAP_SAMPLES = OVERLAP_FRAMES * FFT_HOP
FRAMES_PER_SECOND = SAMPLE_RATE / FFT_HOP        # 86.13
LOWEST_MIDI = 21                                 # the first of the 88 output bins
_INPUT = "serving_default_input_2:0"
_NOTE, _ONSET = "StatefulPartitionedCall:1", "StatefulPartitionedCall:2"


def model_path() -> str:
  spec = importlib.util.find_spec("basic_pitch")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the `basic-pitch` package is not installed (pip install --no-deps "
                            "basic-pitch==0.4.0; scripts/venv.sh does); its ONNX model is the "
                            "transcriber")
  path = os.path.join(list(spec.submodule_search_locations)[0], "saved_models", "icassp_2022",
                      "nmp.onnx")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing from the basic-pitch install")
  return path


@dataclasses.dataclass
class Transcriber:
  session: object
  onset_threshold: float = 0.5
  frame_threshold: float = 0.3
  min_note_frames: int = 11      # basic-pitch's 127.7 ms
  energy_tol: int = 11

  @classmethod
  def load(cls, path: Optional[str] = None, **thresholds) -> "Transcriber":
    import onnxruntime  # pylint: disable=import-outside-toplevel
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # judges run beside training; one core is enough
    session = onnxruntime.InferenceSession(path or model_path(), options,
                                           providers=["CPUExecutionProvider"])
    return cls(session, **thresholds)

  def posteriors(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(note, onset) posteriors `[frames, 88]` of a mono clip at any rate."""
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1 or not wav.size or not np.all(np.isfinite(wav)):
      raise ValueError(f"need a finite, non-empty mono clip, got shape {wav.shape}")
    wav = audio.resample(wav, sample_rate, SAMPLE_RATE).astype(np.float32)
    frames = int(np.floor(len(wav) * FRAMES_PER_SECOND / SAMPLE_RATE))
    padded = np.concatenate([np.zeros(OVERLAP_SAMPLES // 2, np.float32), wav])
    hop = WINDOW_SAMPLES - OVERLAP_SAMPLES
    windows = []
    for start in range(0, len(padded), hop):
      window = padded[start:start + WINDOW_SAMPLES]
      windows.append(np.pad(window, (0, WINDOW_SAMPLES - len(window))))
    outputs = self.session.run([_NOTE, _ONSET], {_INPUT: np.stack(windows)[..., None]})
    half = OVERLAP_FRAMES // 2
    note, onset = (o[:, half:-half].reshape(-1, o.shape[-1])[:frames] for o in outputs)
    return note, onset

  def transcribe(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """Notes `[n, 3]`: start and end in seconds, MIDI pitch; sorted by start."""
    return decode_notes(*self.posteriors(wav, sample_rate), self.onset_threshold,
                        self.frame_threshold, self.min_note_frames, self.energy_tol)


def decode_notes(note: np.ndarray, onset: np.ndarray, onset_threshold: float,
                 frame_threshold: float, min_note_frames: int, energy_tol: int) -> np.ndarray:
  """basic-pitch's onset-then-sustain decoding (see the module doc)."""
  num_frames = note.shape[0]
  peaks = np.zeros_like(onset)
  # A zero frame in front lets a note struck at the very first frame be a peak too.
  maxima = scipy.signal.argrelmax(np.pad(onset, ((1, 0), (0, 0))), axis=0)
  maxima = (maxima[0] - 1, maxima[1])
  peaks[maxima] = onset[maxima]
  times, keys = np.nonzero(peaks >= onset_threshold)
  remaining = note.copy()
  events = []
  for start, key in sorted(zip(times, keys), reverse=True):  # latest first, as basic-pitch
    if start >= num_frames - 1:
      continue
    end, below = start + 1, 0
    while end < num_frames - 1 and below < energy_tol:
      below = below + 1 if remaining[end, key] < frame_threshold else 0
      end += 1
    end -= below
    if end - start <= min_note_frames:
      continue
    remaining[start:end, max(key - 1, 0):key + 2] = 0
    events.append((start / FRAMES_PER_SECOND, end / FRAMES_PER_SECOND, key + LOWEST_MIDI))
  events.sort()
  return np.asarray(events, np.float64).reshape(-1, 3)


def note_features(notes: np.ndarray, seconds: float) -> dict:
  """From transcribed notes: pitch_low / pitch_high (MIDI), register (their mean pitch),
  notes_per_second (onsets), polyphony (mean notes sounding while any does, on a 10 ms grid).
  A clip without notes gets NaN pitches and 0 density and polyphony."""
  if seconds <= 0:
    raise ValueError(f"seconds must be positive, got {seconds}")
  notes = np.asarray(notes, np.float64).reshape(-1, 3)
  if not len(notes):
    return {"pitch_low": float("nan"), "pitch_high": float("nan"), "register": float("nan"),
            "notes_per_second": 0.0, "polyphony": 0.0}
  grid = np.zeros(int(np.ceil(seconds * 100)) + 1)
  for start, end, _ in notes:
    grid[int(start * 100):max(int(start * 100) + 1, int(end * 100))] += 1
  return {"pitch_low": float(notes[:, 2].min()), "pitch_high": float(notes[:, 2].max()),
          "register": float(notes[:, 2].mean()), "notes_per_second": len(notes) / seconds,
          "polyphony": float(grid[grid > 0].mean())}


def clip_features(transcriber: Transcriber, clips: Sequence[np.ndarray],
                  sample_rate: int) -> list[dict]:
  return [note_features(transcriber.transcribe(c, sample_rate), len(c) / sample_rate)
          for c in clips]
