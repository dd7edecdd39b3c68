"""A plan's findings as rows and a markdown table: per-chip bytes, FLOPs, whether a step fits
and, if not, which knob would make it fit."""
import dataclasses
import json
import re
from typing import Mapping, Optional

import numpy as np

from musiclm_jax.core import partitioning
from musiclm_jax.planning import roofline
from musiclm_jax.planning.tpu_slices import GIB, Slice


@dataclasses.dataclass
class Compiled:
  """What XLA says about one compiled step, per chip."""
  step: str                 # "train" or "sample"
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  code_bytes: int
  # Matmul + convolution FLOPs per chip with every loop trip counted (step_flops.py); None
  # where a loop's trip count is unknown.
  flops: Optional[float]
  # Set when XLA refused the program: the HBM it says it had (below the chip's nominal HBM,
  # which the runtime keeps some of), so the step cannot be reported as fitting.
  refused_at_bytes: Optional[int] = None
  # A stage's sampling step: roofline.DecodeStep per batch size (1 and the plan's batch).
  decode: tuple = ()

  @property
  def needed_bytes(self) -> int:
    return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
            + self.code_bytes)

  @classmethod
  def out_of_memory(cls, step: str, error: Exception, state_bytes: int,
                    input_bytes: int) -> "Compiled":
    """XLA refuses to compile a program whose temporaries exceed the chip's HBM; its message
    holds their size. The state and batch bytes come from their shardings instead."""
    match = _HBM_OOM.search(str(error))
    if match is None:
      raise error
    temp, available = _parse_bytes(match.group(1)), _parse_bytes(match.group(2))
    return cls(step, state_bytes + input_bytes, state_bytes, state_bytes, temp, 0, None,
               refused_at_bytes=available)

  @classmethod
  def of(cls, step: str, compiled, flops: Optional[float] = None) -> "Compiled":
    memory = compiled.memory_analysis()
    return cls(step, memory.argument_size_in_bytes, memory.output_size_in_bytes,
               memory.alias_size_in_bytes, memory.temp_size_in_bytes,
               memory.generated_code_size_in_bytes, flops)


# e.g. "the total memory required for HLO temporaries (16.63G) exceeds available HBM
# (15.75G)"; XLA's K/M/G are powers of 1024.
_HBM_OOM = re.compile(
    r"HLO temporaries \(([\d.]+[KMGT]?)\) exceeds available HBM \(([\d.]+[KMGT]?)\)")


def _parse_bytes(text: str) -> int:
  scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
  return int(float(text.rstrip("KMGT")) * scale.get(text[-1], 1))


def fix_advice(result: Compiled, hbm_bytes: int, mesh_shape: Mapping[str, int],
               knobs: Mapping[str, str], batch_per_chip: float) -> str:
  """Which knobs would make a step that does not fit fit: estimates from the byte counts, to
  try in this order. knobs: the model's memory switches that are still off, by kind ("remat",
  "dtype") -> gin name (e.g. TransformerConfig.remat)."""
  if result.refused_at_bytes is not None:
    hbm_bytes = min(hbm_bytes, result.refused_at_bytes)
  elif result.needed_bytes <= hbm_bytes:
    return "fits"
  # A refused program is over even where its byte estimate is not: XLA said so.
  over = max(result.needed_bytes - hbm_bytes, result.temp_bytes - hbm_bytes) / GIB
  chips = int(np.prod(list(mesh_shape.values())))
  state, temp = result.argument_bytes, result.temp_bytes
  train = result.step == "train"
  tips = []
  if mesh_shape.get("fsdp", 1) < chips and train:
    shrunk = state * mesh_shape.get("fsdp", 1) / chips
    tips.append(f"fsdp over all chips (mesh_shape (1, -1, 1)): state {state / GIB:.1f} -> "
                f"~{shrunk / GIB:.1f} GiB")
  if "dtype" in knobs:
    tips.append(f"bfloat16 compute ({knobs['dtype']} = 'bfloat16'): ~half the activations")
  if "remat" in knobs and train:
    tips.append(f"remat ({knobs['remat']} = True): activations are {temp / GIB:.1f} GiB")
  room = hbm_bytes - (result.needed_bytes - temp)
  if room > 0 and batch_per_chip > 1:
    factor = int(2 ** np.ceil(np.log2(temp / room)))
    if factor <= batch_per_chip:
      knob = "trainer.train.num_microbatches" if train else "batch"
      tips.append(f"{knob} x{factor} (or a {factor}x smaller batch per chip)")
  if batch_per_chip <= 1 or not tips:
    tips.append("more chips per example: tensor parallelism (mesh model axis)")
  return f"over by {over:.1f} GiB: " + "; or ".join(tips)


def row(model_name: str, tpu_slice: Slice, mesh_shape: Mapping[str, int], batch_size: int,
        result: Compiled, num_params: int, tokens_per_step: Optional[int],
        knobs: Mapping[str, str], attention_flops: float = 0.0,
        stage: Optional[str] = None) -> dict:
  """One table row (a JSON-able dict): per-chip bytes, FLOPs and whether it fits.
  attention_flops: the step's attention score and value matmuls, forward and backward
  (which 6·N·tokens leaves out), for the whole global batch. stage: the token layout's
  stage a sampling row generates (joins the stages' rows end to end)."""
  chips, spec = tpu_slice.num_chips, tpu_slice.spec
  analytic = (6 * num_params * tokens_per_step + attention_flops) / chips if (
      tokens_per_step and result.step == "train") else None
  ideal_s = result.flops / spec.peak_flops if result.flops else None
  return {
      "model": model_name, "slice": tpu_slice.name, "chips": chips,
      "mesh": "x".join(str(mesh_shape[a]) for a in partitioning.MESH_AXES),
      "batch": batch_size, "step": result.step, "params": num_params,
      "argument_gib": result.argument_bytes / GIB, "output_gib": result.output_bytes / GIB,
      "alias_gib": result.alias_bytes / GIB, "temp_gib": result.temp_bytes / GIB,
      "code_gib": result.code_bytes / GIB, "needed_gib": result.needed_bytes / GIB,
      "hbm_gib": spec.hbm_bytes / GIB,
      "headroom_gib": (min(spec.hbm_bytes, result.refused_at_bytes or spec.hbm_bytes)
                       - result.needed_bytes) / GIB,
      "compiled_tflop": result.flops / 1e12 if result.flops is not None else None,
      "analytic_tflop": analytic / 1e12 if analytic else None,
      "flops_ratio": result.flops / analytic if analytic and result.flops else None,
      "ideal_step_ms": ideal_s * 1e3 if ideal_s else None,
      "ideal_tokens_per_s_per_chip": (tokens_per_step / chips / ideal_s
                                      if ideal_s and tokens_per_step and result.step == "train"
                                      else None),
      "verdict": fix_advice(result, spec.hbm_bytes, mesh_shape, knobs, batch_size / chips),
      **({"stage": stage, "hbm_gb_per_s": spec.hbm_bandwidth / 1e9,
          "decode": [roofline.fields(step, spec, chips) for step in result.decode]}
         if result.decode else {}),
  }


_COLUMNS = (("model", "model", "{}"), ("slice", "slice", "{}"), ("mesh", "mesh d x f x m", "{}"),
            ("batch", "global batch", "{}"), ("step", "step", "{}"),
            ("params", "params (M)", lambda v: f"{v / 1e6:.0f}"),
            ("argument_gib", "args GiB", "{:.2f}"), ("output_gib", "out GiB", "{:.2f}"),
            ("temp_gib", "temp GiB", "{:.2f}"), ("needed_gib", "needed GiB", "{:.2f}"),
            ("hbm_gib", "HBM GiB", "{:.0f}"), ("headroom_gib", "headroom GiB", "{:.2f}"),
            ("compiled_tflop", "compiled TFLOP", "{:.2f}"),
            ("analytic_tflop", "6·N·tokens + attn TFLOP", "{:.2f}"),
            ("flops_ratio", "ratio", "{:.2f}"), ("ideal_step_ms", "ideal step ms", "{:.0f}"),
            ("ideal_tokens_per_s_per_chip", "ideal tokens/s/chip",
             lambda v: f"{v / 1e3:.0f}k"), ("verdict", "fits?", "{}"))


# A sampling row's roofline (roofline.py), one line per batch size: per chip, per decode step.
_DECODE_COLUMNS = (
    ("model", "model", "{}"), ("slice", "slice", "{}"), ("mesh", "mesh d x f x m", "{}"),
    ("batch", "batch", "{}"), ("param_mib", "params MiB", "{:.0f}"),
    ("cache_mib", "KV cache MiB", "{:.0f}"), ("hbm_gb_per_s", "HBM GB/s", "{:.0f}"),
    ("memory_ms", "bytes / HBM ms", "{:.3f}"), ("gflop", "GFLOP", "{:.2f}"),
    ("flops_ratio", "jaxpr / analytic", "{:.2f}"), ("compute_ms", "FLOPs / peak ms", "{:.4f}"),
    ("step_ms", "step ms", "{:.3f}"), ("bound", "bound", "{}"),
    ("steps_per_10s", "steps per 10 s", "{:.0f}"),
    ("seconds_per_10s", "s per 10 s (batch clips)", "{:.2f}"),
    ("realtime_factor", "real-time factor", "{:.1f}"),
    ("chip_seconds_per_clip", "chip-s per clip", "{:.2f}"))

_END_TO_END_COLUMNS = (
    ("slice", "slice", "{}"), ("batch", "batch", "{}"), ("semantic_s", "semantic s", "{:.2f}"),
    ("coarse_s", "coarse s", "{:.2f}"), ("fine_s", "fine s", "{:.2f}"),
    ("total_s", "total s per 10 s (batch clips)", "{:.2f}"),
    ("realtime_factor", "real-time factor", "{:.1f}"),
    ("faster", "faster than real time?", "{}"), ("dominant", "dominant stage", "{}"))


def _table(columns, rows) -> list:
  def cell(value, fmt):
    if value is None:
      return "—"
    return fmt(value) if callable(fmt) else fmt.format(value)

  lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
           "|" + "---|" * len(columns)]
  for row in rows:
    lines.append("| " + " | ".join(cell(row.get(k), fmt) for k, _, fmt in columns) + " |")
  return lines


def markdown_table(rows) -> str:
  """Rows of `report` as a markdown table; per chip, except params and batch. Sampling rows
  with a roofline add its table (per chip, per decode step) and, where all three stages are
  there, the stages end to end."""
  rows = list(rows)
  lines = _table(_COLUMNS, rows)
  decode = [dict(entry, model=r["model"], slice=r["slice"], mesh=r["mesh"],
                 hbm_gb_per_s=r["hbm_gb_per_s"],
                 flops_ratio=entry["gflop"] / entry["analytic_gflop"])
            for r in rows for entry in r.get("decode") or ()]
  if decode:
    lines += ["", "Sampling roofline, per chip and decode step:", ""]
    lines += _table(_DECODE_COLUMNS, decode)
  stages = [dict(e, faster="yes" if e["realtime_factor"] > 1 else "no",
                 dominant=f"{e['dominant']} ({e['dominant_bound']}-bound, "
                          f"{e['dominant_steps_per_10s']:.0f} steps per 10 s)")
            for e in roofline.end_to_end(rows)]
  if stages:
    lines += ["", "The three stages end to end:", ""]
    lines += _table(_END_TO_END_COLUMNS, stages)
  return "\n".join(lines)


def render(path: str) -> str:
  """The table of a JSON-lines file that `plan(output_file=...)` appended to."""
  with open(path) as f:
    return markdown_table(json.loads(line) for line in f if line.strip())
