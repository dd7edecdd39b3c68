"""Acoustic-stage predictions -> audio: the records `infer` or t5x's `t5x.infer` write.

A record holds the stage's input ids (`inputs.inputs`) and its predicted ids
(`prediction_tokens`; t5x keeps the EOS id there, ours stops before it). A fine-stage record
has every level: the coarse codes it was conditioned on and the fine codes it predicted; a
coarse-stage record decodes at the coarse levels' bitrate. Semantic tokens have no decoder:
the coarse and fine stages turn them into acoustic ones first. Writes `<id>.wav` per record
and `decoded.jsonl`; returns the latter's path.
"""
import glob
import json
import os
from typing import Optional

import gin
import numpy as np
from absl import logging

from musiclm_jax.codec.acoustic_tokenizer import Codec
from musiclm_jax.codec.soundstream import SoundStreamConfig
from musiclm_jax.core import files
from musiclm_jax.inference import listening_page
from musiclm_jax.inference.stage_inference import prediction_codes
from musiclm_jax.inference.text_to_audio import write_wav
from musiclm_jax.stages import token_layout

DECODED = "decoded.jsonl"


def acoustic_codes(stage: token_layout.StageVocabulary, record: dict) -> np.ndarray:
  """int32 `[frames, levels]`: the acoustic levels 0..n-1 a record of `stage` holds."""
  ((stream, written),) = stage.writes
  if stream != "acoustic":
    raise ValueError(f"stage {stage.name!r} predicts {stream} tokens, which have no audio "
                     "decoder: run the coarse and fine stages on them first")
  predicted = np.asarray(prediction_codes(stage, np.asarray(record["prediction_tokens"]))[0]
                         [stream], np.int32).reshape(-1, len(written))
  parts = [(written, predicted)]
  for read_stream, levels in stage.reads:
    if read_stream != "acoustic":
      continue
    ids = np.asarray(record["inputs"]["inputs"], np.int32)
    whole = len(ids) - len(ids) % len(levels)
    parts.append((levels, stage.decode("acoustic", ids[:whole], levels)))
  levels = [q for group, _ in parts for q in group]
  if sorted(levels) != list(range(len(levels))):
    raise ValueError(f"stage {stage.name!r} records hold acoustic levels {sorted(levels)}, "
                     "not the first ones a codec decodes")
  frames = min(len(codes) for _, codes in parts)
  by_level = {q: codes[:frames, i] for group, codes in parts for i, q in enumerate(group)}
  return np.stack([by_level[q] for q in range(len(levels))], axis=-1)


def _read_records(pattern: str) -> list[dict]:
  paths = sorted(p for p in glob.glob(pattern) if not p.endswith(".COMPLETED"))
  if not paths:
    raise FileNotFoundError(f"no predictions file matches {pattern}")
  records = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        try:
          record = json.loads(line)
        except json.JSONDecodeError as error:
          raise ValueError(f"{path}:{number} is not JSON ({error})") from None
        if not (isinstance(record, dict) and isinstance(record.get("inputs"), dict)
                and "inputs" in record["inputs"] and "prediction_tokens" in record):
          raise ValueError(f"{path}:{number} is not a prediction record with inputs.inputs and "
                           "prediction_tokens (infer.mode 'predict')")
        records.append(record)
  return records


@gin.configurable(module="codes_to_audio")
def decode_predictions(*, predictions: str, stage: token_layout.StageVocabulary,
                       soundstream_dir: str, soundstream_config: SoundStreamConfig,
                       output_dir: str, step: Optional[int] = None) -> str:
  """`predictions`: a predictions file (or a glob of its shards)."""
  records = _read_records(predictions)
  codec = Codec.from_checkpoint(soundstream_dir, soundstream_config, step)
  os.makedirs(output_dir, exist_ok=True)
  out = []
  for index, record in enumerate(records):
    clip_id = str(record["inputs"].get("id", index))
    codes = acoustic_codes(stage, record)
    if not len(codes):
      logging.warning("%s: no whole frame predicted; no audio", clip_id)
      continue
    wav = np.asarray(codec.decode(codes[None]))[0]
    name = listening_page.safe_stem(clip_id) + ".wav"
    write_wav(os.path.join(output_dir, name), wav, soundstream_config.sample_rate)
    out.append({"id": clip_id, "file": name, "frames": int(len(codes)),
                "levels": int(codes.shape[-1]), "sample_rate": soundstream_config.sample_rate,
                "seconds": len(wav) / soundstream_config.sample_rate})
  path = os.path.join(output_dir, DECODED)
  files.write_text(path, "".join(json.dumps(r) + "\n" for r in out))
  return path
