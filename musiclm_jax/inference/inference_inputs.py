"""What `infer` reads: a seqio task or a prompts file, as checkpointable batches.

Every element carries the model features (`decoder_*`) plus `id` and the raw `inputs` ids
(padded, with `inputs_length`) so each output record says what it was made from.
"""
import json
import os
from typing import Mapping, Optional

import numpy as np
import seqio
import tensorflow as tf


def _pad_to(x, length):
  return tf.pad(x[:length], [[0, length - tf.minimum(tf.shape(x)[0], length)]])


def task_dataset(task_name: str, task_feature_lengths: Mapping[str, int], split: str,
                 feature_converter: seqio.FeatureConverter,
                 shard_info: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
  """The task's examples in order (no shuffle, one epoch), raw `inputs`/`id` beside the model
  features. The raw and converted streams are zipped; both are deterministic."""
  task = seqio.get_mixture_or_task(task_name)
  raw = task.get_dataset(dict(task_feature_lengths), split=split, shuffle=False, num_epochs=1,
                         shard_info=shard_info, use_cached=task.requires_caching)
  converted = feature_converter(raw, dict(task_feature_lengths))
  inputs_length = task_feature_lengths["inputs"]

  def merge(index, pair):
    example, features = pair
    record = dict(features)
    record["id"] = example["id"] if "id" in example else tf.strings.as_string(index)
    record["inputs"] = _pad_to(tf.cast(example["inputs"], tf.int32), inputs_length)
    record["inputs_length"] = tf.shape(example["inputs"])[0]
    return record

  return tf.data.Dataset.zip((raw, converted)).enumerate().map(merge)


def read_prompts(path: str) -> list[dict]:
  """JSONL of `{"id": ..., "inputs": [ids]}` (id optional), or plain lines of
  space-separated ids. Errors name the file and line."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"prompts file not found: {path}")
  prompts = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line) if line.startswith("{") else {"inputs": line.split()}
        ids = [int(t) for t in record["inputs"]]
      except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}:{number}: expected JSON with an 'inputs' list of token ids "
                         f"or space-separated ids ({error})") from error
      if not ids or min(ids) < 2:
        raise ValueError(f"{path}:{number}: inputs must be non-empty ids >= 2 (0/1 are PAD/EOS)")
      prompts.append({"id": str(record.get("id", number - 1)), "inputs": ids})
  if not prompts:
    raise ValueError(f"prompts file {path} holds no prompts")
  return prompts


def prompts_dataset(path: str, targets_length: int,
                    shard_info: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
  """Model features for generation after each prompt: decoder inputs `[0, prompt, 0...]` of
  length max_prompt + targets_length, prefix attention over the prompt."""
  prompts = read_prompts(path)
  if shard_info is not None:
    prompts = prompts[shard_info.index::shard_info.num_shards]
  inputs_length = max(len(p["inputs"]) for p in prompts)
  length = inputs_length + targets_length
  decoder_inputs = np.zeros((len(prompts), length), np.int32)
  causal = np.zeros((len(prompts), length), np.int32)
  raw = np.zeros((len(prompts), inputs_length), np.int32)
  for row, prompt in enumerate(prompts):
    n = len(prompt["inputs"])
    decoder_inputs[row, 1:n + 1] = prompt["inputs"]
    causal[row, :n + 1] = 1
    raw[row, :n] = prompt["inputs"]
  return tf.data.Dataset.from_tensor_slices({
      "decoder_input_tokens": decoder_inputs, "decoder_causal_attention": causal,
      "id": np.array([p["id"] for p in prompts]), "inputs": raw,
      "inputs_length": np.array([len(p["inputs"]) for p in prompts], np.int32)})
