"""Does generated audio follow its prompt? Measured on the synthetic set's attributes.

Two measures, each against the shuffled-prompt control (what a generator that ignores its
prompt scores, whatever its output):

- Classification, any attribute: a nearest-centroid classifier on librosa log-mel profiles,
  fitted on clips the synthesizer renders, applied to the generated clips. Score: the fraction
  classified as their prompt says; control: its expectation when the prompts are permuted
  among the clips, sum_c n_predicted(c) * n_prompted(c) / N^2.
- Ranking, attributes with an order the audio shows in one librosa feature (register: the
  spectral centroid under 2 kHz of the harmonic part, where the notes' low partials sit;
  drums: spectral flatness, the noise of hi-hat and snare; timbre: brightness): the AUC,
  P(feature of a clip prompted with the higher value > feature of one prompted with the
  lower), whose expectation under permuted prompts is exactly 0.5, with a permutation
  p-value. It asks only that the audio moves the right way, so
  a codec's colouring of every clip (which can push all of them into one centroid's class)
  does not hide it.
"""
import dataclasses
import os
from typing import Mapping, Sequence

import librosa
import numpy as np

from musiclm_jax.data import music_synth

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
                  num_clips: int = 240, seed: int = 0,
                  space: music_synth.AttributeSpace = music_synth.FULL) -> Centroids:
  """Centroids of rendered clips per attribute value (other attributes vary over `space`)."""
  profiles = {v: [] for v in values}
  for index in range(num_clips):
    wav, _, attributes = music_synth.render_clip(index, seed, sample_rate, seconds, space)
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


def _spectrum(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """Time-averaged power spectrum and its frequencies."""
  power = np.abs(librosa.stft(np.asarray(wav, np.float32), n_fft=2048, hop_length=512)) ** 2
  return power.mean(axis=1), librosa.fft_frequencies(sr=sample_rate, n_fft=2048)


def harmonic_low_band_centroid(wav: np.ndarray, sample_rate: int,
                               top_hz: float = 2000.0) -> float:
  """log of the spectral centroid (Hz) of the band under `top_hz` of the harmonic part
  (librosa's HPSS): higher for higher notes. The drums' noise, left in, fills the same band
  and drowns the notes: on codec reconstructions (demo codec, 64 held-out clips) register
  ranks at AUC 0.68 with it and 0.94 without; clean renders rank at 1.00 either way."""
  power, freqs = _spectrum(librosa.effects.harmonic(np.asarray(wav, np.float32)), sample_rate)
  band = freqs < top_hz
  return float(np.log((power[band] * freqs[band]).sum() / (power[band].sum() + 1e-12) + 1.0))


def flatness(wav: np.ndarray, sample_rate: int) -> float:
  """log spectral flatness (librosa), averaged over frames: higher for noisier audio."""
  del sample_rate
  frames = librosa.feature.spectral_flatness(y=np.asarray(wav, np.float32), n_fft=2048,
                                             hop_length=512)
  return float(np.log(frames.mean() + 1e-12))


def brightness(wav: np.ndarray, sample_rate: int) -> float:
  """log spectral centroid (librosa, Hz), averaged over frames: higher the more of the energy
  sits in upper harmonics."""
  frames = librosa.feature.spectral_centroid(y=np.asarray(wav, np.float32), sr=sample_rate,
                                             n_fft=2048, hop_length=512)
  return float(np.log(frames.mean() + 1.0))


# attribute -> (its values from lower to higher, the feature that orders them). Timbres by
# brightness: a sine has no overtones, a plucked string's fade, a square wave keeps its odd
# harmonics at 1/n; the demo's three only (the other timbres have no such order).
ORDERED_FEATURES = {
    "register": (("low", "mid", "high"), harmonic_low_band_centroid),
    "drums": (("False", "True"), flatness),
    "instrument": (("sine", "plucked", "square"), brightness),
}


def rank_score(features: Sequence[float], prompted: Sequence[str], order: Sequence[str],
               permutations: int = 2000, seed: int = 0) -> dict:
  """AUC of `features` over pairs of clips prompted with different values of `order` (the
  higher value above the lower), its shuffled-prompt expectation 0.5, and the one-sided
  permutation p-value of the AUC (the share of prompt permutations scoring as high)."""
  features, prompted = np.asarray(features, np.float64), np.asarray(prompted)
  if len(features) != len(prompted) or not len(features):
    raise ValueError(f"need equally many features and prompts, got {len(features)} and "
                     f"{len(prompted)}")
  rank = {value: i for i, value in enumerate(order)}
  unknown = sorted(str(v) for v in set(prompted) - set(rank))
  if unknown:
    raise ValueError(f"prompted values {unknown} are not in the order {list(order)}")
  if len(set(prompted)) < 2:
    raise ValueError(f"a ranking needs clips prompted with two values; all are "
                     f"{str(prompted[0])!r}")
  levels = np.array([rank[v] for v in prompted])
  above = np.sign(features[:, None] - features[None, :])  # +1 where clip i's feature is higher

  def auc(lv):
    pairs = lv[:, None] > lv[None, :]
    return float(((above[pairs] + 1) / 2).mean())

  observed = auc(levels)
  rng = np.random.default_rng(seed)
  null = np.array([auc(rng.permutation(levels)) for _ in range(permutations)])
  return {"auc": observed, "shuffled": 0.5,
          "p_value": float((1 + np.sum(null >= observed)) / (1 + permutations)),
          "clips": int(len(features))}


def rank_attribute(clips: Sequence[np.ndarray], sample_rate: int, prompted: Sequence[str],
                   attribute: str) -> dict:
  """rank_score(...) of `clips` by the feature ORDERED_FEATURES names for `attribute`."""
  order, feature = ORDERED_FEATURES[attribute]
  return rank_score([feature(c, sample_rate) for c in clips], prompted, order)


def prompt_following(clips: Sequence[np.ndarray], sample_rate: int,
                     prompt_attributes: Sequence[Mapping[str, object]],
                     attributes: Mapping[str, Sequence[str]], seconds: float,
                     space: music_synth.AttributeSpace = music_synth.FULL) -> dict:
  """{attribute: score(...)} for generated `clips` and the attributes their prompts named; an
  attribute in ORDERED_FEATURES whose values its order has also gets rank_score(...) under
  "ranking". Centroids are fitted on clips rendered from `space` (the corpus the generator
  was trained on)."""
  profiles = np.stack([log_mel_profile(c, sample_rate) for c in clips])
  results = {}
  for attribute, values in attributes.items():
    values = tuple(str(v) for v in values)
    prompted = [str(a[attribute]) for a in prompt_attributes]
    centroids = fit_centroids(attribute, values, sample_rate, seconds, space=space)
    results[attribute] = score(centroids.classify(profiles), prompted)
    if attribute in ORDERED_FEATURES and set(values) <= set(ORDERED_FEATURES[attribute][0]):
      results[attribute]["ranking"] = rank_attribute(clips, sample_rate, prompted, attribute)
  return results


def read_generations(generations_dir: str, prompts_file: str) -> tuple[list, int, list]:
  """(clips, sample rate, each clip's prompt attributes) of a generation folder whose
  prompts file records the attributes of every prompt."""
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
  return list(clips), rates[0], [prompted[r["id"]] for r in records]


def report(generations_dir: str, prompts_file: str, seconds: float,
           attributes: Mapping[str, Sequence[str]],
           space: music_synth.AttributeSpace = music_synth.FULL) -> dict:
  """prompt_following() over a generation folder whose prompts file records `attributes`."""
  clips, rate, prompted = read_generations(generations_dir, prompts_file)
  return prompt_following(clips, rate, prompted, attributes, seconds, space)
