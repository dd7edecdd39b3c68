"""Roofline of a stage's sampling: what one KV-cached decode step reads and computes per chip,
and what that makes of seconds of compute per 10 s of audio.

The sampling step's decode loop stops at EOS, so neither XLA nor the jaxpr count knows its
trip count; one decode step is traced on its own instead (no compile), and the number of
steps comes from the token layout: a stage writes `frame rate x levels` tokens per second of
audio, one decode step each (the prompt, including a window's kept context, is prefilled,
which is left out here: once per window, compute-bound, not per token).

Per chip, the work split across the mesh as the run shards it:
- parameters: each chip reads its own shard, in the stored dtype (the row's `args`). Under
  fsdp a real step first all-gathers the other chips' shards over ICI; that collective, and
  the HBM reads of the gathered copy, are ignored, so this is the ideal of a step whose
  weights stay where they are sharded (what tensor parallelism over the same chips would read);
- KV cache: the whole allocated cache of each example the chip holds (the batch splits over
  the data x fsdp chips when it divides them; otherwise every chip holds the whole batch),
  keys and values split over the model axis by heads.
  A decode step attends over every cache position, masked, not only the filled ones;
- FLOPs: the step's matmuls (step_flops on its jaxpr) over all chips of the mesh.
step time = max(bytes / HBM bandwidth, FLOPs / peak): the chips work at once, so this is the
slice's wall-clock time per step; chip-seconds are that times the chips.
"""
import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.core import partitioning
from musiclm_jax.planning import step_flops
from musiclm_jax.planning.tpu_slices import Chip

AUDIO_SECONDS = 10.0
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class DecodeStep:
  """One decode step of `batch` sequences, per chip."""
  batch: int
  param_bytes: float
  cache_bytes: float
  flops: float           # counted on the step's jaxpr
  analytic_flops: float  # 2·N·batch + 4·layers·heads·head_dim·cache length·batch
  tokens_per_second: float  # of audio, the stage writes

  @property
  def bytes(self) -> float:
    return self.param_bytes + self.cache_bytes


def tokens_per_second(stage) -> float:
  """Tokens a stage writes per second of audio (token_layout.StageVocabulary)."""
  ((stream, levels),) = stage.writes
  return float(stage.layout.frame_rate(stream) * len(levels))


def _nbytes(x, per_chip: bool = True) -> int:
  sharding = getattr(x, "sharding", None)
  shape = sharding.shard_shape(x.shape) if per_chip and sharding is not None else x.shape
  return math.prod(shape) * np.dtype(x.dtype).itemsize


def cache_shapes(module, params, batch: int, length: int):
  """The KV cache the model itself allocates for `[batch, length]` (as prefill_cache does)."""
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  apply = functools.partial(module.apply, enable_dropout=False, decode=True, mutable=["cache"])
  return jax.eval_shape(apply, {"params": params}, tokens)[1]["cache"]


def decode_step(model, params, batch: int, length: int, mesh=None) -> DecodeStep:
  """`params`: ShapeDtypeStructs, with the run's shardings for per-chip bytes (none: one
  chip). `length`: the stage's sequence length (inputs + targets), the cache's size."""
  module = model.module
  params_per_chip = sum(_nbytes(x) for x in jax.tree.leaves(params))
  # Traced unsharded: the count is of the global step, split over the chips below.
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  cache = cache_shapes(module, params, batch, length)

  def step(params, ids, cache):
    return module.apply({"params": params, "cache": cache}, ids, enable_dropout=False,
                        decode=True, mutable=["cache"])

  ids = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
  flops = step_flops.count(step, params, ids, cache)
  config = module.config
  num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  analytic = batch * (2 * num_params + 4 * config.num_layers * config.num_heads
                      * config.head_dim * length)
  shape = dict(mesh.shape) if mesh is not None else {}
  batch_chips = math.prod(shape.get(a, 1) for a in partitioning.BATCH_AXES)
  batch_split = batch_chips if batch % batch_chips == 0 else 1
  model_chips = shape.get("model", 1)

  def cache_bytes_per_chip(x):
    # Keys [batch, heads, head_dim, length] and values [batch, heads, length, head_dim]
    # (layers/attention.py) also split their heads over the model axis (activation_heads),
    # as tensor parallelism shards them.
    heads = x.ndim == 4 and x.shape[1] == config.num_heads
    split = batch_split * (model_chips if heads and config.num_heads % model_chips == 0 else 1)
    return _nbytes(x, per_chip=False) / split

  chips = math.prod(shape.values()) if shape else 1
  cache_bytes = sum(cache_bytes_per_chip(x) for x in jax.tree.leaves(cache))
  return DecodeStep(batch, params_per_chip, cache_bytes, flops / chips, analytic / chips,
                    tokens_per_second(model.stage))


def step_seconds(step: DecodeStep, chip: Chip) -> tuple[float, str]:
  """Roofline time of one decode step on one chip and what bounds it."""
  memory, compute = step.bytes / chip.hbm_bandwidth, step.flops / chip.peak_flops
  return max(memory, compute), "memory" if memory >= compute else "compute"


def fields(step: DecodeStep, chip: Chip, chips: int,
           audio_seconds: float = AUDIO_SECONDS) -> dict:
  """A plan row's roofline entry for one batch size (JSON-able)."""
  seconds, bound = step_seconds(step, chip)
  steps = step.tokens_per_second * audio_seconds
  total = steps * seconds
  return {
      "batch": step.batch, "param_mib": step.param_bytes / MIB,
      "cache_mib": step.cache_bytes / MIB, "read_mib": step.bytes / MIB,
      "gflop": step.flops / 1e9, "analytic_gflop": step.analytic_flops / 1e9,
      "memory_ms": step.bytes / chip.hbm_bandwidth * 1e3,
      "compute_ms": step.flops / chip.peak_flops * 1e3,
      "step_ms": seconds * 1e3, "bound": bound, "steps_per_10s": steps,
      # Wall clock on the slice for `batch` clips of `audio_seconds` each.
      "seconds_per_10s": total,
      "chip_seconds_per_clip": total * chips / step.batch,
      "realtime_factor": step.batch * audio_seconds / total,
  }


def end_to_end(rows) -> list[dict]:
  """Per slice and roofline batch, the three stages' sampling rows summed: seconds per 10 s
  clip batch, real-time factor, and the stage that takes longest."""
  groups = {}
  for row in rows:
    for entry in row.get("decode") or ():
      key = (row["slice"], row["batch"], entry["batch"])
      groups.setdefault(key, {}).setdefault(row.get("stage"), entry)
  out = []
  for (slice_name, _, batch), stages in groups.items():
    if not {"semantic", "coarse", "fine"} <= set(stages):
      continue
    seconds = {s: stages[s]["seconds_per_10s"] for s in ("semantic", "coarse", "fine")}
    total = sum(seconds.values())
    dominant = max(seconds, key=seconds.get)
    out.append({"slice": slice_name, "batch": batch, **{f"{s}_s": v for s, v in seconds.items()},
                "total_s": total, "realtime_factor": batch * AUDIO_SECONDS / total,
                "dominant": dominant, "dominant_bound": stages[dominant]["bound"],
                "dominant_steps_per_10s": stages[dominant]["steps_per_10s"]})
  return out


def stage_name(model) -> Optional[str]:
  stage = getattr(model, "stage", None)
  return stage.name if stage is not None else None
