"""Batch inference with a trained stage: the library behind `python -m musiclm_jax.infer`.

Restores the parameters (onto whatever mesh this run has), generates (`predict`) or scores
(`score`) a seqio task's split or a prompts file in batches sharded over the mesh's batch
axes, and writes `{task}-{mode}.jsonl-NNNNN-of-NNNNN` records with `inputs`, `prediction`,
`prediction_tokens`, `score`. Killed and rerun, it resumes after its last finished chunk.
The same work is a library call: `run(model, params, dataset, ...)`.
"""
import os
import sys
from typing import Mapping, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import seqio
from absl import logging
from tqdm import tqdm

from musiclm_jax.core import checkpoints, input_pipeline, partitioning
from musiclm_jax.stages import token_layout
from musiclm_jax.inference.inference_inputs import prompts_dataset, task_dataset
from musiclm_jax.inference.inference_outputs import ChunkedJsonlWriter
from musiclm_jax.core.base_model import BaseModel
from musiclm_jax.core.trainer import DatasetConfig

MODES = ("predict", "score")
_RECORD_KEYS = ("id", "inputs", "inputs_length")


def _model_features(batch: Mapping[str, np.ndarray]) -> dict:
  return {k: v for k, v in batch.items() if k.startswith("decoder_")}


def _pad_batch(batch: dict, size: int) -> tuple[dict, int]:
  """Pads the last, short batch to `size` rows; returns it and the number of real rows."""
  real = len(batch["id"])
  if real == size:
    return batch, real
  padded = {k: np.concatenate([v, np.repeat(v[-1:], size - real, axis=0)]) for k, v in batch.items()}
  return padded, real


def prediction_codes(stage: Optional[token_layout.StageVocabulary], ids: np.ndarray):
  """Generated ids up to EOS, and (with a stage) their codes per stream level: what our
  records hold, also made from t5x.infer's `prediction_tokens` (docs/t5x.md)."""
  ids = [int(t) for t in ids]
  ids = ids[:ids.index(token_layout.EOS_ID)] if token_layout.EOS_ID in ids else [t for t in ids if t]
  if stage is None:
    return ids, ids
  ((stream, levels),) = stage.writes
  whole = len(ids) - len(ids) % len(levels)
  codes = stage.decode(stream, np.asarray(ids[:whole], np.int32), levels)
  return {stream: codes.tolist()}, ids


def make_step(model: BaseModel, mode: str, num_decodes: int, decoder_params: Optional[dict]):
  if mode == "predict":
    def step(params, batch, rng):
      decodes, aux = model.predict_batch_with_aux(params, batch, rng, num_decodes=num_decodes,
                                                  decoder_params=decoder_params)
      return decodes, aux["scores"]
  elif mode == "score":
    def step(params, batch, rng):
      del rng
      return jnp.zeros(batch["decoder_input_tokens"].shape, jnp.int32), model.score_batch(params, batch)
  else:
    raise ValueError(f"infer.mode={mode!r}; expected one of {MODES}")
  return step


def run(model: BaseModel, params, dataset, writer: ChunkedJsonlWriter, *, batch_size: int,
        mode: str = "predict", chunk_batches: int = 10, num_decodes: int = 1,
        decoder_params: Optional[dict] = None, seed: int = 0, mesh=None,
        param_shardings=None, total: Optional[int] = None) -> int:
  """Runs `mode` over a tf.data dataset of examples, writing chunks; returns records written.

  batch_size is global; each process batches its own shard of `dataset`. Resumes from the
  writer's last completed chunk.
  """
  if writer.is_complete():
    logging.info("%s is already complete", writer.path)
    return 0
  mesh = mesh or partitioning.create_mesh()
  local_batch = batch_size // jax.process_count()
  iterator = input_pipeline.DatasetIterator(dataset.batch(local_batch, drop_remainder=False))
  done_chunks = writer.completed_chunks()
  if done_chunks:
    iterator.restore(writer.iterator_prefix(done_chunks - 1))
    logging.info("Resuming after %d completed chunks", done_chunks)
  step_fn = make_step(model, mode, num_decodes, decoder_params)
  shapes = {k: (batch_size, *spec.shape) for k, spec in dataset.element_spec.items()
            if k.startswith("decoder_")}
  batch_shardings = input_pipeline.batch_shardings(mesh, {k: (v, None) for k, v in shapes.items()})
  replicated = partitioning.replicated(mesh)
  jitted = jax.jit(step_fn, in_shardings=(param_shardings, batch_shardings, replicated),
                   out_shardings=replicated)
  rows = slice(jax.process_index() * local_batch, (jax.process_index() + 1) * local_batch)
  stage = getattr(model, "stage", None)
  written, chunk, exhausted = 0, done_chunks, False
  progress = tqdm(total=total, initial=done_chunks * chunk_batches * batch_size, unit="ex",
                  desc=f"infer {mode}", file=sys.stderr, disable=jax.process_index() > 0)
  while not exhausted:
    records = []
    for _ in range(chunk_batches):
      try:
        local = next(iterator)
      except StopIteration:
        exhausted = True
        break
      local, real = _pad_batch(local, local_batch)
      batch = input_pipeline.to_global_batch(_model_features(local), batch_shardings)
      index = chunk * chunk_batches + len(records)
      rng = jax.random.fold_in(jax.random.key(seed), index)
      decodes, scores = jax.device_get(jitted(params, batch, rng))
      for row in range(real):
        record = {"inputs": {"id": local["id"][row].decode() if isinstance(local["id"][row], bytes)
                             else str(local["id"][row]),
                             "inputs": local["inputs"][row, :local["inputs_length"][row]].tolist()},
                  "score": float(scores[rows][row])}
        if mode == "predict":
          record["prediction"], record["prediction_tokens"] = prediction_codes(stage, decodes[rows][row])
        records.append(record)
      progress.update(real)
    if records or not exhausted:
      writer.write_chunk(chunk, records, iterator.save)
      written += len(records)
      chunk += 1
  progress.close()
  total_records = writer.finalize()
  logging.info("Wrote %d records to %s", total_records, writer.path)
  return written


@gin.configurable
def infer(*, model: BaseModel, checkpoint_dir: str, output_dir: str, mode: str = "predict",
          dataset_cfg: Optional[DatasetConfig] = None, prompts_file: Optional[str] = None,
          targets_length: Optional[int] = None, checkpoint_step: Optional[int] = None,
          batch_size: int = 8, chunk_batches: int = 10, num_decodes: int = 1,
          decoder_params: Optional[dict] = None, seed: int = 0) -> str:
  """Gin entry: restore, read, run, write. Returns the output file's path."""
  if (dataset_cfg is None) == (prompts_file is None):
    raise ValueError("infer needs exactly one of dataset_cfg (a seqio task) or prompts_file")
  if mode == "score" and prompts_file is not None:
    raise ValueError("infer.mode='score' needs targets: use a seqio task, not a prompts file")
  mesh = partitioning.create_mesh()
  rules = partitioning.logical_axis_rules()
  shard_info = seqio.ShardInfo(jax.process_index(), jax.process_count())
  if dataset_cfg is not None:
    dataset = task_dataset(dataset_cfg.mixture_or_task_name, dataset_cfg.task_feature_lengths,
                           dataset_cfg.split, model.FEATURE_CONVERTER_CLS(pack=False), shard_info)
    name = dataset_cfg.mixture_or_task_name
  else:
    if not targets_length:
      raise ValueError("infer.targets_length is required with a prompts file")
    dataset = prompts_dataset(prompts_file, targets_length, shard_info)
    name = os.path.splitext(os.path.basename(prompts_file))[0]
  length = dataset.element_spec["decoder_input_tokens"].shape[-1]
  boxed = jax.eval_shape(lambda rng: model.get_initial_variables(
      rng, {"decoder_input_tokens": (1, length)}), jax.random.key(0))["params"]
  shardings = partitioning.logical_to_shardings(mesh, boxed, rules)
  # Outside jax.set_mesh: orbax places the restored shards with concrete shardings.
  params, _ = checkpoints.restore_params(
      checkpoint_dir, checkpoints.abstract_with_shardings(nn.meta.unbox(boxed), shardings),
      checkpoint_step)
  writer = ChunkedJsonlWriter(output_dir, name, mode, jax.process_index(), jax.process_count())
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    run(model, params, dataset, writer, batch_size=batch_size, mode=mode,
        chunk_batches=chunk_batches, num_decodes=num_decodes, decoder_params=decoder_params,
        seed=seed, mesh=mesh, param_shardings=shardings)
  return writer.path
