"""Ahead-of-time compile of a model's real steps for a TPU slice, on a CPU machine.

libtpu describes a slice it is not attached to (`jax.experimental.topologies`); a mesh over
those compile-only devices takes the run's own TrainState shardings (`trainer.shard_model`)
and the run's own jitted step (`trainer.jit_train_step`), and XLA's TPU compiler then says
how many bytes each chip needs (`memory_analysis`); the step's jaxpr says how many matmul
FLOPs it runs, loops included (`step_flops.py`). Nothing is allocated: every input is a ShapeDtypeStruct.
A stage's sampling step also gets the roofline of one decode step (`roofline.py`).

Per chip, with donation (the state's input buffers are reused for its outputs):
  needed = arguments + outputs - aliased + temporaries + generated code
and that is compared with the chip's HBM (`tpu_slices.CHIPS`).
"""
import dataclasses
import json
import time
from typing import Mapping, Optional, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
from absl import logging

from musiclm_jax.core import base_model, input_pipeline, partitioning, trainer
from musiclm_jax.planning import plan_table, roofline, step_flops, tpu_slices
from musiclm_jax.inference.stage_inference import make_step as make_sampling_step


def abstract_inputs(feature_converter_cls, task_feature_lengths: Mapping[str, int],
                    batch_size: int, feature_dtypes: Mapping[str, str]) -> dict:
  """`{feature: ShapeDtypeStruct [batch, ...]}` of the model's batch, from the run's own feature
  converter applied to one dummy task example (no data set is read).

  feature_dtypes: dtypes of task features the converter does not declare (e.g. raw `audio`
  for a pass-through converter, a `text` string it tokenizes); others default to int32.
  """
  converter = feature_converter_cls(pack=False)
  declared = {k: v.dtype for k, v in getattr(converter, "TASK_FEATURES", {}).items()}
  dtypes = {**{k: tf.int32 for k in task_feature_lengths}, **declared,
            **{k: tf.as_dtype(v) for k, v in feature_dtypes.items()}}
  # A string (a caption) is a scalar the converter may tokenize; any string left after
  # conversion is not a model input (a pass-through converter keeps it).
  example = {k: tf.constant("music") if dtype == tf.string else
             tf.zeros([task_feature_lengths[k]], dtype)
             for k, dtype in dtypes.items() if k in task_feature_lengths or dtype == tf.string}
  converted = converter(tf.data.Dataset.from_tensors(example), dict(task_feature_lengths))
  return {k: jax.ShapeDtypeStruct((batch_size, *spec.shape), spec.dtype.as_numpy_dtype)
          for k, spec in converted.element_spec.items() if spec.dtype != tf.string}


def _bytes_per_chip(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings."""
  return int(sum(np.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(tree)))


def _with_shardings(shapes: Mapping, shardings: Mapping) -> dict:
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[k])
          for k, v in shapes.items()}


def compile_steps(model, optimizer, input_shapes: Mapping, mesh, rules, num_microbatches: int,
                  train: bool = True, sample_shapes: Optional[Mapping] = None
                  ) -> tuple[list, int]:
  """Compiles the train step (with `train`) and the sampling step (given `sample_shapes`)
  on `mesh`. Returns `([Compiled, ...], number of parameters)`."""
  # shard_model only traces (eval_shape); outside jax.set_mesh nothing can be placed on the
  # compile-only devices by accident.
  setup = trainer.shard_model(model, optimizer, input_shapes, mesh, rules)
  replicated = partitioning.replicated(mesh)
  rng = jax.ShapeDtypeStruct((), jax.eval_shape(jax.random.key, 0).dtype, sharding=replicated)
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(setup.state_shapes.params)))
  results = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    if train:
      batch_shardings = input_pipeline.batch_shardings(mesh, input_shapes)
      train_step = trainer.jit_train_step(model, setup, batch_shardings, num_microbatches)
      batch = _with_shardings(input_shapes, batch_shardings)
      try:
        traced = train_step.trace(setup.abstract_state(), batch, rng)
        compiled = traced.lower().compile()
        # Counted on the traced jaxpr: XLA counts a loop's body (microbatches, scanned
        # layers, attention blocks) once. Every chip runs the same program on its share.
        flops = step_flops.jaxpr_flops(traced.jaxpr.jaxpr) / mesh.size
        results.append(plan_table.Compiled.of("train", compiled, flops))
      except jax.errors.JaxRuntimeError as error:
        results.append(plan_table.Compiled.out_of_memory("train", error, _bytes_per_chip(
            setup.abstract_state()), _bytes_per_chip(batch)))
    if sample_shapes is not None:
      # As inference.run jits it: parameters as in training, batch over the batch axes.
      shardings = input_pipeline.batch_shardings(mesh, sample_shapes)
      sample = jax.jit(make_sampling_step(model, "predict", 1, None),
                       in_shardings=(setup.state_shardings.params, shardings, replicated),
                       out_shardings=replicated)
      params, batch = setup.abstract_state().params, _with_shardings(sample_shapes, shardings)
      try:
        compiled = sample.lower(params, batch, rng).compile()
        # The decode loop stops at EOS: its trip count is not known at compile time, so the
        # FLOPs and bytes of one decode step come from the roofline below instead.
        result = plan_table.Compiled.of("sample", compiled)
      except jax.errors.JaxRuntimeError as error:
        result = plan_table.Compiled.out_of_memory(
            "sample", error, _bytes_per_chip(params), _bytes_per_chip(batch))
      results.append(dataclasses.replace(result, decode=_decode_steps(
          model, params, sample_shapes, mesh)))
  return results, num_params


def _decode_steps(model, params, sample_shapes: Mapping, mesh) -> tuple:
  """Roofline of one decode step at batch 1 and at the plan's batch (traced, not compiled:
  a step's bytes and FLOPs follow from shapes). Stage models only: others have no layout."""
  if getattr(model, "stage", None) is None or not hasattr(model, "module"):
    return ()
  batch, length = sample_shapes["decoder_input_tokens"].shape
  return tuple(roofline.decode_step(model, params, b, length, mesh) for b in sorted({1, batch}))


@gin.configurable(module="planning")
def stage_crop_seconds(stage: str = gin.REQUIRED, layout=gin.REQUIRED) -> float:
  """For gin: the stage's training crop (tokens.STAGES), e.g. 30 s for the semantic stage."""
  return layout.stage(stage).crop_seconds


def _sequence_length(model, shapes) -> Optional[int]:
  if "decoder_input_tokens" in shapes:
    return shapes["decoder_input_tokens"].shape[1]
  num_frames = getattr(getattr(model, "config", None), "num_frames", None)
  if callable(num_frames) and "audio" in shapes:
    return int(num_frames(shapes["audio"].shape[1]))
  return None


def _attention_flops(model, tokens_per_example: Optional[int], batch: int) -> float:
  """Score and value matmuls of a train step, forward and backward: 12·L·T²·H·D_head per
  example (every score computed, as both attention paths do); 0 for models without the
  attention config fields."""
  config = getattr(getattr(model, "module", None), "config", None)
  fields = ("num_layers", "num_heads", "head_dim")
  if not tokens_per_example or not all(hasattr(config, f) for f in fields):
    return 0.0
  return (12.0 * config.num_layers * tokens_per_example ** 2 * config.num_heads
          * config.head_dim * batch)


def _memory_knobs(model) -> dict:
  """The model config's memory switches that are off: {"remat": "<Config>.remat", "dtype":
  "<Config>.dtype"} (stage Transformer, w2v-BERT; others have none)."""
  config = getattr(getattr(model, "module", None), "config", None)
  name, knobs = type(config).__name__, {}
  if getattr(config, "remat", None) in (False, "none"):  # the stage Transformer names policies
    knobs["remat"] = f"{name}.remat"
  if getattr(config, "dtype", None) in ("float32", jnp.float32):
    knobs["dtype"] = f"{name}.dtype"
  return knobs


@gin.configurable(module="planning")
def plan(*, model, task_feature_lengths: Mapping[str, int], batch_size: int,
         optimizer_fn=gin.REQUIRED, slices: Sequence[str] = ("v4-32", "v4-128", "v5e-256"),
         num_microbatches: int = 1, steps: Sequence[str] = ("train", "sample"),
         sample_batch_size: Optional[int] = None,
         feature_dtypes: Optional[Mapping[str, str]] = None,
         tokens_per_example: Optional[int] = None, name: Optional[str] = None,
         output_file: Optional[str] = None) -> str:
  """Compiles and reports `model` on every slice; returns the markdown table.

  steps: "train" and/or "sample" (sampling only for models that generate).
  batch_size / sample_batch_size: global (sample defaults to batch_size). tokens_per_example:
  the sequence length in 6·N·tokens (default: the decoder length of a token model, or the
  frame count of an audio model whose config has `num_frames(samples)`; else no analytic
  column). feature_dtypes: see abstract_inputs.
  """
  unknown = set(steps) - {"train", "sample"}
  if unknown:
    raise ValueError(f"planning.plan.steps: unknown {sorted(unknown)}; use 'train', 'sample'")
  name = name or type(model).__name__
  train_shapes = abstract_inputs(model.FEATURE_CONVERTER_CLS, task_feature_lengths,
                                 batch_size, feature_dtypes or {})
  tokens_per_example = tokens_per_example or _sequence_length(model, train_shapes)
  generates = "sample" in steps and (type(model).predict_batch_with_aux
                                     is not base_model.BaseModel.predict_batch_with_aux)
  sample_shapes = abstract_inputs(
      model.FEATURE_CONVERTER_CLS, task_feature_lengths, sample_batch_size or batch_size,
      feature_dtypes or {}) if generates else None
  # The learning rate's value changes neither the program's memory nor its FLOPs.
  optimizer = model.make_optimizer(optimizer_fn, optax.constant_schedule(1e-4))
  rules = partitioning.logical_axis_rules()
  rows = []
  for slice_name in slices:
    tpu_slice = tpu_slices.parse_slice(slice_name)
    mesh = partitioning.create_mesh(devices=tpu_slices.topology_devices(tpu_slice))
    logging.info("Compiling %s for %s (%s, mesh %s)", name, slice_name, tpu_slice.topology,
                 dict(mesh.shape))
    start = time.time()
    results, num_params = compile_steps(model, optimizer, train_shapes, mesh, rules,
                                        num_microbatches, "train" in steps, sample_shapes)
    logging.info("Compiled in %.0f s", time.time() - start)
    for result in results:
      batch = batch_size if result.step == "train" else (sample_batch_size or batch_size)
      tokens = tokens_per_example * batch if tokens_per_example else None
      rows.append(plan_table.row(name, tpu_slice, dict(mesh.shape), batch, result,
                                  num_params, tokens, _memory_knobs(model),
                                  _attention_flops(model, tokens_per_example, batch),
                                  stage=roofline.stage_name(model)))
      if output_file:
        with open(output_file, "a") as f:
          f.write(json.dumps(rows[-1]) + "\n")
  return plan_table.markdown_table(rows)
