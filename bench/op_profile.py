"""Where a compiled step's time goes: XLA:CPU's own per-op trace, grouped.

Run:  .venv/bin/python bench/op_profile.py [--what train_step|soundstream_warm_up|soundstream_gan|
                                                   sample_batch_1|sample_batch_8|
                                                   codec_encode|codec_decode]
                                            [--steps 3] [--top 20]

Compiles the step (`train_step`: bench/train_step.py's `fixed` config as `trainer.train` jits
it; `soundstream_*`: bench/soundstream_step.py's tiny codec per phase; `sample_batch_*`: one
call of bench/sample.py's KV-cached sampling, prompt 64 and 128 new tokens; `codec_*`: the paper
SoundStream's encode or decode of 10 s at batch 1, as bench/codec.py), runs it twice to warm
up, then traces `--steps` executions with `jax.profiler` (a Perfetto trace). Every XLA op in
the trace is matched to its instruction in the compiled HLO and grouped by

- kind: `matmul` (dots, and the ynn / xnn / onednn library fusions that hold them),
  `convolution`, `layout copy` (copy / transpose fusions: data moved, nothing computed),
  `elementwise` (the other loop fusions), `other`;
- source: the JAX name stack of the op (its `op_name` metadata, layer indices dropped, so the
  six layers of one kind add up; `transpose(jvp(...))` marks the backward pass).

It prints the wall time per step, the time per kind, and the `--top` groups, in ms per step
and as a share of all op time (ops on the two threads may overlap, so the op total can exceed
the wall time).
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\((.*)$", re.M)
_LIBRARY_FUSION = re.compile(r"^(ynn|xnn|onednn)_fusion")


def instructions(hlo_text: str) -> dict:
  """HLO instruction name -> (kind, source) for the ops a trace can name."""
  out = {}
  for name, opcode, rest in _INSTRUCTION.findall(hlo_text):
    op_name = re.search(r'op_name="([^"]+)"', rest)
    source = op_name.group(1) if op_name else ""
    source = re.sub(r"^jit\([^)]*\)/", "", source)
    source = re.sub(r"layers_\d+/", "", source)
    if opcode == "dot" or _LIBRARY_FUSION.match(name):
      kind = "matmul"
    elif opcode == "convolution" or "convolution" in name:
      kind = "convolution"
    elif name.startswith(("copy", "transpose")) or opcode in ("copy", "transpose"):
      kind = "layout copy"
    elif opcode == "fusion":
      kind = "elementwise"
    else:
      kind = "other"
    out[name] = (kind, source)
  return out


def trace_durations(run, steps: int) -> tuple[collections.Counter, float]:
  """Microseconds per traced event name over `steps` calls of `run`, and wall s per step."""
  with tempfile.TemporaryDirectory() as directory:
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    start = time.perf_counter()
    for _ in range(steps):
      run()
    wall = (time.perf_counter() - start) / steps
    jax.profiler.stop_trace()
    (path,) = glob.glob(os.path.join(directory, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  durations = collections.Counter()
  for event in events:
    if event.get("ph") == "X":
      durations[event.get("name", "")] += event.get("dur", 0)
  return durations, wall


def profile(compiled, run, steps: int = 3):
  """`(wall s per step, {kind: ms per step}, {(kind, source): ms per step})`."""
  known = instructions(compiled.as_text())
  for _ in range(2):
    run()
  durations, wall = trace_durations(run, steps)
  kinds, groups = collections.Counter(), collections.Counter()
  for name, micros in durations.items():
    if name in known:
      kind, source = known[name]
      kinds[kind] += micros / 1e3 / steps
      groups[(kind, source)] += micros / 1e3 / steps
  return wall, kinds, groups


def _train_step():
  from bench import train_step as bench_train  # pylint: disable=import-outside-toplevel
  cfg, seq, batch = bench_train._configs(["fixed"], None, [])["fixed"]  # pylint: disable=protected-access
  step, state, batches, rng, _, context = bench_train.build_train_step(cfg, seq, batch)
  with context():
    compiled = step.lower(state, batches[0], rng).compile()
  holder = {"state": state}

  def run():
    with context():
      holder["state"], metrics = compiled(holder["state"], batches[0], rng)
      jax.block_until_ready((holder["state"], metrics))
  return compiled, run


def _soundstream_step(which: str):
  from bench import soundstream_step  # pylint: disable=import-outside-toplevel
  _, _, steps = soundstream_step.build_steps()
  step, _, train_step, state, batch = steps[0 if which == "warm_up" else 1]
  compiled = train_step.lower(state, batch).compile()
  return compiled, lambda: jax.block_until_ready(compiled(state, batch))


def _sample(batch_size: int):
  from bench import sample as bench_sample  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  model, params = bench_sample.build_model(bench_sample.PROMPT + bench_sample.NEW + 1)
  batch = bench_sample._batch(batch_size, bench_sample.PROMPT, bench_sample.NEW,  # pylint: disable=protected-access
                              np.random.default_rng(0))
  sample = jax.jit(lambda p, b, r: model.predict_batch_with_aux(
      p, b, r, decoder_params={"temperature": 1.0, "max_decode_steps": bench_sample.NEW})[0])
  rng = jax.random.key(0)
  compiled = sample.lower(params, batch, rng).compile()
  return compiled, lambda: jax.block_until_ready(compiled(params, batch, rng))


def _codec(which: str):
  from bench import codec as bench_codec  # pylint: disable=import-outside-toplevel
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  cfg = bench_codec.CONFIGS["paper"]()
  init = jax.jit(bench_codec.SoundStreamCodec(cfg).init)
  codec = bench_codec.Codec(cfg, nn.meta.unbox(init(jax.random.key(0, impl="rbg"),
                                                    jnp.zeros((1, cfg.hop)))))
  wav = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 10 * cfg.sample_rate)),
                    jnp.float32)
  if which == "encode":
    compiled = codec._encode.lower(codec.variables, wav, cfg.num_levels).compile()  # pylint: disable=protected-access
    return compiled, lambda: jax.block_until_ready(compiled(codec.variables, wav))
  codes = codec.encode(wav)
  compiled = codec._decode.lower(codec.variables, codes).compile()  # pylint: disable=protected-access
  return compiled, lambda: jax.block_until_ready(compiled(codec.variables, codes))


STEPS = {"train_step": _train_step,
         "codec_encode": lambda: _codec("encode"), "codec_decode": lambda: _codec("decode"),
         "sample_batch_1": lambda: _sample(1), "sample_batch_8": lambda: _sample(8),
         "soundstream_warm_up": lambda: _soundstream_step("warm_up"),
         "soundstream_gan": lambda: _soundstream_step("gan")}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--what", default="train_step", choices=sorted(STEPS))
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=20)
  args = parser.parse_args()
  compiled, run = STEPS[args.what]()
  wall, kinds, groups = profile(compiled, run, args.steps)
  total = sum(kinds.values())
  print(f"{args.what}: {wall * 1e3:.0f} ms per step (wall), {total:.0f} ms of op time per step")
  print("\n| kind | ms / step | share |\n| --- | --- | --- |")
  for kind, ms in kinds.most_common():
    print(f"| {kind} | {ms:.1f} | {100 * ms / total:.1f} % |")
  print("\n| kind | source | ms / step | share |\n| --- | --- | --- | --- |")
  for (kind, source), ms in groups.most_common(args.top):
    print(f"| {kind} | `{source[-80:]}` | {ms:.1f} | {100 * ms / total:.1f} % |")


if __name__ == "__main__":
  main()
