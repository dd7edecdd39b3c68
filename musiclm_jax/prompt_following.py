"""Does generated audio follow its prompt? Measured on the synthetic set's attributes.

For an attribute the audio can show (register: where the energy sits in frequency;
instrument: the spectral envelope), a nearest-centroid classifier on librosa log-mel profiles
is fitted on clips the synthesizer renders, then applied to the generated clips. The score is
the fraction classified as their prompt says, against the shuffled-prompt control: the
expected fraction when the prompts are permuted among the clips,
sum_c n_predicted(c) * n_prompted(c) / N^2, which is what a generator that ignores its
prompt scores whatever its output.
"""
import dataclasses
import os
from typing import Mapping, Sequence

import librosa
import numpy as np

from tasks import music_synth

NUM_MELS = 40


def log_mel_profile(wav: np.ndarray, sample_rate: int) -> np.ndarray:
  """Time-averaged log-mel spectrum with its mean removed (loudness does not count)."""
  wav = np.asarray(wav, np.float32)
  if wav.ndim != 1 or wav.size < 2048 or not np.all(np.isfinite(wav)):
    raise ValueError(f"need a finite mono clip of >= 2048 samples, got shape {wav.shape}")
  mel = librosa.feature.melspectrogram(y=wav, sr=sample_rate, n_fft=1024, hop_length=256,
                                       n_mels=NUM_MELS, fmax=sample_rate / 2)
  profile = np.log(mel.mean(axis=1) + 1e-8)
  return profile - profile.mean()


@dataclasses.dataclass(frozen=True)
class Centroids:
  attribute: str
  values: tuple[str, ...]
  means: np.ndarray  # [values, NUM_MELS]

  def classify(self, profiles: np.ndarray) -> list[str]:
    distances = ((profiles[:, None, :] - self.means[None]) ** 2).sum(-1)
    return [self.values[i] for i in distances.argmin(axis=1)]


def fit_centroids(attribute: str, values: Sequence[str], sample_rate: int, seconds: float,
                  num_clips: int = 240, seed: int = 0) -> Centroids:
  """Centroids of rendered clips per attribute value (other attributes vary freely)."""
  profiles = {v: [] for v in values}
  for index in range(num_clips):
    wav, _, attributes = music_synth.render_clip(index, seed, sample_rate, seconds)
    value = str(attributes[attribute])
    if value in profiles:
      profiles[value].append(log_mel_profile(wav, sample_rate))
  empty = [v for v, p in profiles.items() if not p]
  if empty:
    raise ValueError(f"no rendered clip has {attribute} in {empty}; render more clips")
  return Centroids(attribute, tuple(values), np.stack([np.mean(profiles[v], 0) for v in values]))


def score(predicted: Sequence[str], prompted: Sequence[str]) -> dict:
  """Matched fraction and its shuffled-prompt expectation."""
  if len(predicted) != len(prompted) or not predicted:
    raise ValueError(f"need equally many predictions and prompts, got {len(predicted)} and "
                     f"{len(prompted)}")
  n = len(prompted)
  matched = float(np.mean([p == q for p, q in zip(predicted, prompted)]))
  shuffled = sum(predicted.count(c) * list(prompted).count(c) for c in set(prompted)) / n**2
  return {"matched": matched, "shuffled": float(shuffled), "clips": n}


def prompt_following(clips: Sequence[np.ndarray], sample_rate: int,
                     prompt_attributes: Sequence[Mapping[str, object]],
                     attributes: Mapping[str, Sequence[str]], seconds: float) -> dict:
  """{attribute: score(...)} for generated `clips` and the attributes their prompts named."""
  profiles = np.stack([log_mel_profile(c, sample_rate) for c in clips])
  results = {}
  for attribute, values in attributes.items():
    centroids = fit_centroids(attribute, values, sample_rate, seconds)
    predicted = centroids.classify(profiles)
    results[attribute] = score(predicted, [str(a[attribute]) for a in prompt_attributes])
  return results


def report(generations_dir: str, prompts_file: str, seconds: float,
           attributes: Mapping[str, Sequence[str]]) -> dict:
  """prompt_following() over a generation folder whose prompts file records `attributes`."""
  import json  # pylint: disable=import-outside-toplevel
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  with open(prompts_file, encoding="utf-8") as f:
    prompted = {p["id"]: p["attributes"] for p in map(json.loads, f)}
  with open(os.path.join(generations_dir, "generations.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  missing = [r["id"] for r in records if r["id"] not in prompted]
  if missing:
    raise ValueError(f"{prompts_file} has no attributes for generations {missing}")
  clips, rates = zip(*(sf.read(os.path.join(generations_dir, r["file"]), dtype="float32")
                       for r in records))
  if len(set(rates)) != 1:
    raise ValueError(f"{generations_dir}: clips at several sample rates {sorted(set(rates))}")
  return prompt_following(clips, rates[0], [prompted[r["id"]] for r in records], attributes,
                          seconds)
