r"""Text -> audio for a list of prompts: the library behind `python -m musiclm_jax.generate`.

  python -m musiclm_jax.generate --gin_file=pipeline/tiny.gin --gin_file=runs/generate.gin \
    --gin.SOUNDSTREAM_DIR="'out/soundstream'" --gin.MULAN_DIR="'out/mulan'" \
    --gin.SEMANTIC_DIR="'out/semantic'" --gin.COARSE_DIR="'out/coarse'" \
    --gin.FINE_DIR="'out/fine'" --gin.PROMPTS_FILE="'prompts.txt'" \
    --gin.INFER_OUTPUT_DIR="'out/generations'"

Prompts come from a file (one caption per line, or JSONL with `text` and optional `id`,
`seconds`) or from a seqio task's text feature (e.g. MusicCaps captions). The output folder:

  generations.jsonl   one record per clip: id, text, file, spectrogram, sample_rate, seconds,
                      seed, tokens (per stream), timings (of its batch), batch_size
                      (+ mulan_score, num_candidates, reranker when reranking)
  <stem>.wav          16-bit PCM; <stem> = listening_page.safe_stem(id)
  <stem>.png          its spectrogram
  index.html          the listening page, rewritten after every batch

A record is appended only after its wav and png are complete, so a run that is killed and
rerun skips what is finished and regenerates the rest.
"""
import dataclasses
import json
import os
import time
from typing import Callable, Optional

import gin
import numpy as np
import soundfile as sf
from absl import logging

from musiclm_jax.core import files
from musiclm_jax.inference import listening_page, pipeline
from musiclm_jax.evaluation import eval_sets

RECORDS = "generations.jsonl"


@dataclasses.dataclass(frozen=True)
class Prompt:
  id: str
  text: str
  seconds: float
  # The reference clip this prompt describes (a task's clip, or JSONL `reference_id`):
  # evaluation pairs the generation with it (per-clip KL).
  reference_id: Optional[str] = None


def _check_seconds(seconds, where: str) -> float:
  try:
    seconds = float(seconds)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: seconds must be a number, got {seconds!r}") from None
  if not 0 < seconds <= 3600:
    raise ValueError(f"{where}: seconds must be in (0, 3600], got {seconds}")
  return seconds


def read_prompts(path: str, seconds: float) -> list[Prompt]:
  """Plain lines (a caption each; id = line number) or JSONL `{"text", "id"?, "seconds"?}`.
  Errors name the file and line; ids must be unique."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"prompts file not found: {path}")
  prompts = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      where = f"{path}:{number}"
      if line.startswith("{"):
        try:
          record = json.loads(line)
        except json.JSONDecodeError as error:
          raise ValueError(f"{where}: not valid JSON ({error})") from None
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
          raise ValueError(f"{where}: needs a non-empty string 'text'")
        reference = record.get("reference_id")
        prompts.append(Prompt(str(record.get("id", number)), text.strip(),
                              _check_seconds(record.get("seconds", seconds), where),
                              None if reference is None else str(reference)))
      else:
        prompts.append(Prompt(str(number), line, _check_seconds(seconds, where)))
  if not prompts:
    raise ValueError(f"prompts file {path} holds no prompts")
  return _unique(prompts, path)


def _unique(prompts: list[Prompt], source: str) -> list[Prompt]:
  seen = {}
  for prompt in prompts:
    stem = listening_page.safe_stem(prompt.id)
    if stem in seen:
      raise ValueError(f"{source}: id {prompt.id!r} repeats (or shares its file name with) "
                       f"id {seen[stem]!r}; ids must be unique")
    seen[stem] = prompt.id
  return prompts


def _caption_dataset(name: str, split: str):
  """A captioned set's examples: an audio task's uncropped TFDS source (as evaluate reads its
  references) or a TFDS name; any other seqio task as its preprocessors leave it."""
  import seqio  # pylint: disable=import-outside-toplevel
  if name in seqio.TaskRegistry.names():
    task = seqio.get_mixture_or_task(name)
    if not hasattr(task.source, "tfds_dataset"):
      return task.get_dataset(None, split=split, shuffle=False, num_epochs=1)
  return eval_sets.reference_dataset(name, split)[0]


def task_prompts(task_name: str, split: str, seconds: float, text_feature: Optional[str] = None,
                 id_feature: Optional[str] = None,
                 max_prompts: Optional[int] = None) -> list[Prompt]:
  """Captions of a seqio task's (or TFDS name's) split, in order.

  Text and id features are found as evaluate finds them (eval_sets.TEXT_KEYS / ID_KEYS) unless
  named; the id is also the prompt's reference_id, so evaluation pairs each generation with
  its clip. A set without ids numbers its examples (and has no reference ids).
  """
  dataset = _caption_dataset(task_name, split)
  features = dataset.element_spec
  text_key = eval_sets.pick_key(features, text_feature, eval_sets.TEXT_KEYS, "caption",
                                task_name)
  id_key = (eval_sets.pick_key(features, id_feature, (), "id", task_name) if id_feature else
            next((k for k in eval_sets.ID_KEYS if k in features), None))
  prompts = []
  for index, example in enumerate(dataset.as_numpy_iterator()):
    if max_prompts is not None and index >= max_prompts:
      break
    clip_id = eval_sets.as_text(example[id_key]) if id_key else None
    prompts.append(Prompt(clip_id or str(index), eval_sets.as_text(example[text_key]),
                          _check_seconds(seconds, task_name), clip_id))
  if not prompts:
    raise ValueError(f"task {task_name} ({split}) yielded no examples")
  return _unique(prompts, task_name)


def finished_records(output_dir: str) -> list[dict]:
  """The records of clips whose files are complete. A torn last line (a kill mid-append) or a
  record whose wav is gone is dropped and the file rewritten without it."""
  path = os.path.join(output_dir, RECORDS)
  if not os.path.exists(path):
    return []
  records, dropped = [], 0
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        dropped += 1
        continue
      if os.path.exists(os.path.join(output_dir, record["file"])):
        records.append(record)
      else:
        dropped += 1
  if dropped:
    logging.warning("%s: dropping %d incomplete record(s)", path, dropped)
    files.write_text(path, "".join(json.dumps(r) + "\n" for r in records))
  return records


def write_wav(path: str, wav: np.ndarray, sample_rate: int) -> None:
  with files.atomic_path(path, suffix=".wav") as tmp:
    sf.write(tmp, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def _append(path: str, record: dict) -> None:
  with open(path, "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")
    f.flush()
    os.fsync(f.fileno())


def _batches(prompts: list[Prompt], batch_size: int):
  """Consecutive prompts of equal length, at most `batch_size` at a time."""
  batch = []
  for prompt in prompts:
    if batch and (len(batch) == batch_size or prompt.seconds != batch[0].seconds):
      yield batch
      batch = []
    batch.append(prompt)
  if batch:
    yield batch


@gin.configurable(module="text_to_audio")
def generate(*, load_music_lm: Callable[[], pipeline.MusicLM], output_dir: str,
             prompts_file: Optional[str] = None, task_name: Optional[str] = None,
             split: str = "validation", text_feature: Optional[str] = None,
             id_feature: Optional[str] = None, max_prompts: Optional[int] = None,
             seconds: float = 10.0, batch_size: int = 4, num_candidates: int = 1,
             seed: int = 0, title: str = "MusicLM generations") -> str:
  """Generates a clip per prompt into `output_dir`, skipping clips already there; returns the
  listening page's path. A batch's seed is `seed` + the index of its first prompt."""
  if (prompts_file is None) == (task_name is None):
    raise ValueError("text_to_audio.generate needs exactly one of prompts_file or task_name")
  if batch_size < 1 or num_candidates < 1:
    raise ValueError(f"batch_size ({batch_size}) and num_candidates ({num_candidates}) must be "
                     ">= 1")
  prompts = (read_prompts(prompts_file, seconds) if prompts_file else
             task_prompts(task_name, split, seconds, text_feature, id_feature, max_prompts))
  os.makedirs(output_dir, exist_ok=True)
  records = finished_records(output_dir)
  done = {r["id"] for r in records}
  index_of = {p.id: i for i, p in enumerate(prompts)}
  pending = [p for p in prompts if p.id not in done]
  if done:
    logging.info("Resuming: %d of %d clips already in %s", len(prompts) - len(pending),
                 len(prompts), output_dir)
  in_order = lambda: sorted(records, key=lambda r: index_of.get(r["id"], len(prompts)))
  page = listening_page.write_page(output_dir, in_order(), title)
  if not pending:
    return page
  music_lm = load_music_lm()
  records_path = os.path.join(output_dir, RECORDS)
  started, made = time.perf_counter(), 0
  for batch in _batches(pending, batch_size):
    batch_seed = seed + index_of[batch[0].id]
    out = music_lm.generate([p.text for p in batch], batch[0].seconds, seed=batch_seed,
                            num_candidates=num_candidates)
    for row, prompt in enumerate(batch):
      stem = listening_page.safe_stem(prompt.id)
      write_wav(os.path.join(output_dir, stem + ".wav"), out.wav[row], out.sample_rate)
      listening_page.write_spectrogram(out.wav[row], out.sample_rate,
                                       os.path.join(output_dir, stem + ".png"))
      record = {"id": prompt.id, "text": prompt.text, "file": stem + ".wav",
                "spectrogram": stem + ".png", "sample_rate": int(out.sample_rate),
                "seconds": float(out.seconds), "seed": batch_seed,
                "tokens": out.token_counts(), "batch_size": len(batch),
                "timings": {k: round(v, 4) for k, v in out.timings.items()}}
      if prompt.reference_id is not None:
        record["reference_id"] = prompt.reference_id
      if out.scores is not None:
        # Which MuLan picked this clip: an evaluation that scores with the same one is biased.
        record.update(mulan_score=float(out.scores[row]), num_candidates=num_candidates,
                      reranker={"model": "mulan",
                                "dir": getattr(music_lm.mulan.embedder, "source", None)})
      _append(records_path, record)
      records.append(record)
    made += len(batch)
    page = listening_page.write_page(output_dir, in_order(), title)
    rate = made / (time.perf_counter() - started)
    logging.info("%d/%d clips, %.2f clips/s, ETA %.0f s", len(records), len(prompts), rate,
                 (len(pending) - made) / max(rate, 1e-9))
  return page
