"""Prompt following judged by models that never saw our data: basic-pitch and musicnn.

For prompts written with rendered_scores' attributes (or any that record them), each judge
is scored against the shuffled-prompt control, as demo/prompt_following.py does:

- transcription (basic-pitch, transcription.py): clips prompted with a higher tempo word should
  hold more notes per second, with more voices a higher polyphony, in a higher register a
  higher mean pitch: `rank_score`'s AUC (0.5 under permuted prompts) and its p-value.
- instruments (musicnn, instrument_tags.py): per instrument word the prompts name, the AUC of
  its tag probability, clips prompted with it against clips prompted without; and, over clips
  whose prompt names exactly one taggable instrument, the fraction whose most probable word
  among the prompted ones is theirs, against its shuffled-prompt expectation (`score`).

  python -m musiclm_jax.evaluation.score_judges GENERATIONS_DIR PROMPTS_FILE

reads a generation folder (generations.jsonl + wavs) and a prompts JSONL whose records carry
`attributes` (tempo, num_voices, register, instruments: any of them), and writes
GENERATIONS_DIR/score_judges.json. `--references rendered_scores/<config> SPLIT [MAX_CLIPS]`
judges a built split against its own captions' attributes: how far each judge can be trusted
on this music.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping, Optional, Sequence

import numpy as np

from musiclm_jax.demo import prompt_following
from musiclm_jax.evaluation import instrument_tags
from musiclm_jax.evaluation import transcription

# attribute -> (its values from lower to higher, the transcription feature that orders them)
TRANSCRIPTION_ORDERS = {
    "tempo": (("slow", "moderate", "fast"), "notes_per_second"),
    "num_voices": (tuple(str(n) for n in range(1, 129)), "polyphony"),
    "register": (("low", "mid", "high"), "register"),
}
OUTPUT = "score_judges.json"


def transcription_following(features: Sequence[Mapping[str, float]],
                            prompted: Sequence[object], attribute: str) -> dict:
  """rank_score of the transcription feature TRANSCRIPTION_ORDERS names for `attribute`."""
  if attribute not in TRANSCRIPTION_ORDERS:
    raise ValueError(f"no transcription feature orders {attribute!r}; known: "
                     f"{sorted(TRANSCRIPTION_ORDERS)}")
  order, feature = TRANSCRIPTION_ORDERS[attribute]
  values = [float(f[feature]) for f in features]
  # A clip with no transcribed notes has no register: it ranks lowest.
  values = [v if np.isfinite(v) else -1.0 for v in values]
  result = prompt_following.rank_score(values, [str(p) for p in prompted], order)
  return {**result, "feature": feature}


def instrument_following(probabilities: Mapping[str, np.ndarray],
                         prompted: Sequence[Sequence[str]]) -> dict:
  """{"per_word": {word: rank_score}, "classification": score(...)} (see the module doc);
  words no prompt names, or every prompt names, are left out of per_word."""
  prompted = [[w for w in words if w in probabilities] for words in prompted]
  named = sorted({w for words in prompted for w in words})
  if not named:
    raise ValueError(f"no prompt names an instrument the tagger knows ({sorted(probabilities)})")
  per_word = {}
  for word in named:
    labels = ["yes" if word in words else "no" for words in prompted]
    if len(set(labels)) == 2:
      per_word[word] = prompt_following.rank_score(probabilities[word], labels, ("no", "yes"))
  single = [i for i, words in enumerate(prompted) if len(words) == 1]
  result = {"per_word": per_word}
  candidates = sorted({prompted[i][0] for i in single})
  if len(candidates) >= 2:
    table = np.stack([probabilities[w] for w in candidates], axis=1)
    predicted = [candidates[int(np.argmax(table[i]))] for i in single]
    result["classification"] = {**prompt_following.score(predicted,
                                                         [prompted[i][0] for i in single]),
                                "candidates": candidates}
  return result


def _words(value) -> list[str]:
  """A prompt's instruments: a list of words, or one word (a bare string is not its letters)."""
  if isinstance(value, (str, bytes)):
    value = [value]
  return [w.decode() if isinstance(w, bytes) else str(w) for w in value]


def judge(clips: Sequence[np.ndarray], sample_rate: int,
          prompt_attributes: Sequence[Mapping[str, object]],
          transcriber: Optional[transcription.Transcriber] = None,
          tagger: Optional[instrument_tags.InstrumentTagger] = None) -> dict:
  """Every judge the prompts' attributes allow: an attribute is judged when at least two of
  its values occur among the prompts."""
  if len(clips) != len(prompt_attributes) or not clips:
    raise ValueError(f"need equally many clips and prompts, got {len(clips)} and "
                     f"{len(prompt_attributes)}")
  results = {}
  judged = [a for a in TRANSCRIPTION_ORDERS
            if all(a in p for p in prompt_attributes)
            and len({str(p[a]) for p in prompt_attributes}) >= 2]
  if judged:
    transcriber = transcriber or transcription.Transcriber.load()
    features = transcription.clip_features(transcriber, clips, sample_rate)
    for attribute in judged:
      results[attribute] = transcription_following(
          features, [p[attribute] for p in prompt_attributes], attribute)
  if all("instruments" in p for p in prompt_attributes):
    tagger = tagger or instrument_tags.InstrumentTagger.load()
    results["instruments"] = instrument_following(
        tagger.probabilities(clips, sample_rate),
        [_words(p["instruments"]) for p in prompt_attributes])
  return results


def read_rendered_references(name: str, split: str,
                             max_clips: Optional[int] = None) -> tuple[list, int, list]:
  """(clips, rate, attributes) of a built rendered_scores config (`rendered_scores/demo`), in
  the data dir the tasks use: the judges' ceiling, since each clip is exactly what its
  caption says."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from musiclm_jax.data import audio_tasks, tfds_audio  # pylint: disable=import-outside-toplevel
  builder = tfds.builder(name, data_dir=audio_tasks.tfds_data_dir())
  if split not in builder.info.splits:
    raise ValueError(f"{name} has no split {split!r}; it has {sorted(builder.info.splits)}")
  clips, attributes = [], []
  for example in builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator():
    if max_clips is not None and len(clips) >= max_clips:
      break
    clips.append(tfds_audio.pcm_to_float(example["audio"]))
    a = example["attributes"]
    attributes.append({"tempo": a["tempo"].decode(), "num_voices": int(a["num_voices"]),
                       "instruments": [w.decode() for w in a["instruments"]]})
  return clips, int(builder.info.features["audio"].sample_rate), attributes


def _print(result: dict) -> None:
  for attribute, score in result.items():
    if attribute == "instruments":
      for word, ranking in score["per_word"].items():
        print(f"instrument {word}: AUC {ranking['auc']:.2f} (shuffled 0.50, "
              f"p = {ranking['p_value']:.3f})")
      if "classification" in score:
        c = score["classification"]
        print(f"instrument classified as prompted: {c['matched']:.2f} of {c['clips']} "
              f"(shuffled prompts: {c['shuffled']:.2f})")
    else:
      print(f"{attribute} by {score['feature']}: AUC {score['auc']:.2f} (shuffled 0.50, "
            f"p = {score['p_value']:.3f})")


USAGE = ("usage: python -m musiclm_jax.evaluation.score_judges GENERATIONS_DIR PROMPTS_FILE\n"
         "       python -m musiclm_jax.evaluation.score_judges --references "
         "rendered_scores/<config> SPLIT [MAX_CLIPS]")


def main(argv) -> int:
  from musiclm_jax.core import files  # pylint: disable=import-outside-toplevel
  if len(argv) in (4, 5) and argv[1] == "--references":
    clips, rate, prompted = read_rendered_references(
        argv[2], argv[3], int(argv[4]) if len(argv) == 5 else None)
    _print(judge(clips, rate, prompted))
    return 0
  if len(argv) != 3 or argv[1].startswith("-"):
    print(USAGE, file=sys.stderr)
    return 2
  clips, rate, prompted = prompt_following.read_generations(argv[1], argv[2])
  result = judge(clips, rate, prompted)
  files.write_json(os.path.join(argv[1], OUTPUT), result)
  _print(result)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
