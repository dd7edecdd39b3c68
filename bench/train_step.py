"""Throughput of the stage Transformer's real train step, next to the machine's matmul peak.

Run:  .venv/bin/python bench/train_step.py [--configs fixed,base] [--steps N] [--budget S]
                                           [--stage semantic|coarse|fine|none]

For every config it builds `DecoderOnlyModel(DecoderOnlyTransformer(TransformerConfig(...)))`,
the project optimizer (`optimizers.create(constant 1e-3)`: clip + AdamW), shards it with
`trainer.shard_model` on a 1-device mesh and jits `model.train_step` exactly as
`trainer.train` does (same shardings, state donated). Batches are random PrefixLM batches
(random prefix length per example, no padding), dropout at the config's rate.

Configs:
  fixed  emb_dim 512, 6 layers, 8 heads x 64, gated-GELU MLP 2048 (wi_0, wi_1, wo),
         seq 256, batch 8, vocab 1024 + token_layout.NUM_SPECIAL_IDS, float32.
  base   TransformerConfig as bound by musiclm_jax/gin/models/stage/base.gin, its vocabulary the
         `--stage`'s under the paper token layout (network.gin's `token_layout.stage_vocab_size`;
         `--stage none`: 1024 + specials); seq / batch from TASK_FEATURE_LENGTHS /
         BATCH_SIZE macros if base.gin binds them, else 512 / 8 (noted). If the file is
         missing or unparsable: `_BASE_FALLBACK` (emb 768, 12 layers, 12 x 64 heads, MLP 2048,
         vocab 1024 + specials, seq 512, batch 8), with a note.

Timing: compile and the first execution are excluded; then up to --steps steps (default
10 fixed, 4 base), stopping once --budget seconds are spent (at least 2 steps); the median
step time gives tokens/s (all B * T positions) and achieved FLOP/s.

Model FLOPs per step (analytic, the "model FLOPs" of MFU), with B batch, T sequence length,
L layers, d_attn = num_heads * head_dim, tokens = B * T:

    flops = 6 * N * tokens  +  12 * L * T * d_attn * tokens

  6 * N * tokens: one multiply-add (2 FLOPs) per parameter per token forward, twice that
    backward (input and weight gradients). N counts every parameter except the token
    embedding table and the relative-position bias table (both are gathers, not matmuls);
    the untied output projection `logits_dense` IS counted, as are the (negligible) RMSNorm
    scales.
  12 * L * T * d_attn * tokens: QK^T and AV each cost 2 * T * d_attn FLOPs per token per
    layer forward (4 * T * d_attn), x3 for forward + backward. The full T x T score matrix
    is counted, since the implementation computes it (no causal skipping).
Softmax, norms, dropout, the loss and the optimizer update are not counted. XLA's own count
(`compiled.cost_analysis()["flops"]`, which includes elementwise work) is printed alongside.

Matmul peak: best of several jitted float32 `jnp.dot` of 2048 x 2048 matrices, 2 n^3 / t.
"""
import argparse
import contextlib
import functools
import logging
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax

from musiclm_jax.core import input_pipeline
from musiclm_jax.stages import stage_model
from musiclm_jax.core import optimizers
from musiclm_jax.core import partitioning
from musiclm_jax.stages import token_layout
from musiclm_jax.core import trainer
from musiclm_jax.stages.transformer import DecoderOnlyTransformer, TransformerConfig

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BASE_GIN = os.path.join(_REPO, "musiclm_jax", "gin", "models", "stage", "base.gin")
_FIXED = dict(model=dict(vocab_size=1024 + token_layout.NUM_SPECIAL_IDS, emb_dim=512, num_layers=6,
                         num_heads=8, head_dim=64, mlp_dim=2048, dtype="float32",
                         param_dtype="float32"),
              seq=256, batch=8)
_BASE_FALLBACK = dict(model=dict(vocab_size=1024 + token_layout.NUM_SPECIAL_IDS, emb_dim=768,
                                 num_layers=12, num_heads=12, head_dim=64, mlp_dim=2048),
                      seq=512, batch=8)
_DEFAULT_STEPS = {"fixed": 10, "base": 4}
_EMBEDDING_PARAMS = ("token_embedder", "relpos_bias")  # gathers: not in N


# --- configs ----------------------------------------------------------------------------------

def _query(key):
  try:
    return gin.query_parameter(key)
  except (ValueError, KeyError):
    return None


def _base_from_gin(stage, notes):
  """(TransformerConfig, seq, batch) from base.gin, or the fallback with a note.

  The vocabulary is the one training uses: base.gin's `@token_layout.stage_vocab_size()` for
  `stage` under the paper token layout (stage None: 1024 + specials, like `fixed`).
  """
  rel = os.path.relpath(_BASE_GIN, _REPO)
  if not os.path.exists(_BASE_GIN):
    notes.append(f"base: {rel} does not exist; used the built-in fallback sizes")
    return (TransformerConfig(**_BASE_FALLBACK["model"]), _BASE_FALLBACK["seq"],
            _BASE_FALLBACK["batch"])
  gin.clear_config()
  gin.add_config_file_search_path(os.path.join(_REPO, "musiclm_jax", "gin"))  # includes are gin/-relative
  root_logger = logging.getLogger()
  level = root_logger.level
  root_logger.setLevel(logging.CRITICAL)  # gin logs every search-path miss as an error
  try:
    gin.parse_config_file(_BASE_GIN, skip_unknown=True)
    bound = sorted(gin.get_bindings("TransformerConfig", resolve_references=False))
    if stage is None:
      gin.bind_parameter("TransformerConfig.vocab_size", _BASE_FALLBACK["model"]["vocab_size"])
      vocab_from = "1024 + specials (--stage none)"
    else:
      gin.parse_config([f"STAGE = '{stage}'", "LAYOUT = @token_layout.TokenLayout()"])
      vocab_from = f"the {stage} stage under the paper token layout"
    cfg = TransformerConfig()  # gin fills in every bound field
    seq = _query("TASK_FEATURE_LENGTHS/macro.value")
    if isinstance(seq, dict):
      seq = sum(int(v) for v in seq.values())  # PrefixLM: inputs ++ targets in one sequence
    batch = _query("BATCH_SIZE/macro.value")
  except Exception as e:  # pylint: disable=broad-except
    notes.append(f"base: could not read {rel} ({type(e).__name__}: {e}); used the built-in "
                 "fallback sizes")
    return (TransformerConfig(**_BASE_FALLBACK["model"]), _BASE_FALLBACK["seq"],
            _BASE_FALLBACK["batch"])
  finally:
    gin.clear_config()
    root_logger.setLevel(level)
  notes.append(f"base: TransformerConfig from {rel} (binds {', '.join(bound)}); vocab "
               f"{cfg.vocab_size} = {vocab_from}")
  if not seq or not batch:
    seq = seq or _BASE_FALLBACK["seq"]
    batch = batch or _BASE_FALLBACK["batch"]
    notes.append(f"base: {rel} binds no TASK_FEATURE_LENGTHS / BATCH_SIZE; used seq {seq}, "
                 f"batch {batch}")
  return cfg, int(seq), int(batch)


def _configs(names, stage, notes):
  out = {}
  for name in names:
    if name == "fixed":
      out[name] = (TransformerConfig(**_FIXED["model"]), _FIXED["seq"], _FIXED["batch"])
    elif name == "base":
      out[name] = _base_from_gin(stage, notes)
    else:
      raise SystemExit(f"unknown config {name!r}; expected fixed or base")
  return out


# --- FLOPs ------------------------------------------------------------------------------------

def _param_counts(param_shapes):
  """(total, non-embedding) parameter counts of a params tree of ShapeDtypeStructs."""
  total = non_embedding = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(param_shapes)[0]:
    size = int(np.prod(leaf.shape))
    total += size
    names = {getattr(k, "key", None) for k in path}
    if not names & set(_EMBEDDING_PARAMS):
      non_embedding += size
  return total, non_embedding


def analytic_flops(cfg: TransformerConfig, non_embedding_params: int, seq: int, batch: int):
  """6 * N * tokens + 12 * L * T * d_attn * tokens (see the module docstring)."""
  tokens_ = seq * batch
  dense = 6 * non_embedding_params * tokens_
  attention = 12 * cfg.num_layers * seq * cfg.num_heads * cfg.head_dim * tokens_
  return dense + attention, dense, attention


def _temp_bytes(compiled):
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def _xla_flops(compiled):
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


# --- measurements -----------------------------------------------------------------------------

def matmul_peak(n=2048, reps=8):
  """Best-of-`reps` FLOP/s of a jitted float32 n x n @ n x n."""
  a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(a, b))
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best


def random_prefix_lm_batch(rng: np.random.Generator, batch: int, seq: int, vocab: int):
  """What seqio's PrefixLMFeatureConverter emits for an unpadded `inputs ++ targets`."""
  ids = rng.integers(token_layout.NUM_SPECIAL_IDS, vocab, size=(batch, seq), dtype=np.int32)
  inputs = np.concatenate([np.zeros((batch, 1), np.int32), ids[:, :-1]], axis=1)
  prefix = rng.integers(1, seq // 2 + 1, size=(batch, 1))  # number of input (prompt) tokens
  pos = np.arange(seq)[None, :]
  return {
      "decoder_input_tokens": inputs,
      "decoder_target_tokens": ids,
      "decoder_loss_weights": (pos >= prefix).astype(np.int32),
      # Bidirectional over the prompt plus the position that predicts the first target.
      "decoder_causal_attention": (pos <= prefix).astype(np.int32),
  }


def build_train_step(cfg: TransformerConfig, seq: int, batch: int):
  """The jitted train step as `trainer.train` builds it, on a 1-device mesh, with its state,
  two random batches and a factory of the mesh context to run it in: `(train_step, state,
  batches, rng, setup, context)`."""
  model = stage_model.DecoderOnlyModel(DecoderOnlyTransformer(cfg))
  optimizer = optimizers.create(optax.constant_schedule(1e-3))
  mesh = partitioning.create_mesh((1, 1, 1), devices=jax.devices()[:1])
  rules = partitioning.logical_axis_rules()
  rng = np.random.default_rng(0)
  host_batches = [random_prefix_lm_batch(rng, batch, seq, cfg.vocab_size) for _ in range(2)]
  input_shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host_batches[0].items()}
  context = functools.partial(_on_mesh, mesh, rules)
  with context():
    setup = trainer.shard_model(model, optimizer, input_shapes, mesh, rules)
    shardings = input_pipeline.batch_shardings(mesh, input_shapes)
    batches = [jax.device_put(b, shardings) for b in host_batches]
    state = setup.init_fn(jax.random.key(0))
    train_step = jax.jit(
        functools.partial(model.train_step, optimizer=optimizer, num_microbatches=1),
        in_shardings=(setup.state_shardings, shardings, partitioning.replicated(mesh)),
        out_shardings=(setup.state_shardings, partitioning.replicated(mesh)),
        donate_argnums=(0,))
  return train_step, state, batches, jax.random.key(1), setup, context


@contextlib.contextmanager
def _on_mesh(mesh, rules):
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def bench_config(name, cfg: TransformerConfig, seq: int, batch: int, steps: int, budget: float):
  train_step, state, batches, step_rng, setup, context = build_train_step(cfg, seq, batch)
  with context():
    start = time.perf_counter()
    compiled = train_step.lower(state, batches[0], step_rng).compile()
    compile_s = time.perf_counter() - start

    start = time.perf_counter()  # warm-up: first execution, excluded
    state, metrics = compiled(state, batches[0], step_rng)
    jax.block_until_ready((state, metrics))
    warmup_s = time.perf_counter() - start
    first_loss = float(metrics["loss"])

    times = []
    loop_start, cpu_start, host_start = time.perf_counter(), time.process_time(), _host_busy()
    for i in range(steps):
      start = time.perf_counter()
      state, metrics = compiled(state, batches[(i + 1) % len(batches)], step_rng)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - start)
      if len(times) >= 2 and time.perf_counter() - loop_start > budget:
        break
    # Cores this process kept busy while timing, and cores the rest of the host did (other
    # processes competing for the CPU make the numbers pessimistic).
    wall = time.perf_counter() - loop_start
    busy_cores = (time.process_time() - cpu_start) / wall
    host_end = _host_busy()
    other_cores = (None if host_start is None or host_end is None
                   else max(0.0, (host_end - host_start) / wall - busy_cores))
    last = jax.device_get(metrics)

  total, non_embedding = _param_counts(setup.state_shapes.params)
  flops, dense, attention = analytic_flops(cfg, non_embedding, seq, batch)
  median = statistics.median(times)
  return dict(
      name=name, seq=seq, batch=batch, params=total, non_embedding=non_embedding,
      steps=len(times), compile_s=compile_s, warmup_s=warmup_s, median_s=median,
      min_s=min(times), max_s=max(times), tokens_per_s=seq * batch / median,
      flops=flops, dense_flops=dense, attention_flops=attention, achieved=flops / median,
      xla_flops=_xla_flops(compiled), temp_bytes=_temp_bytes(compiled),
      busy_cores=busy_cores, other_cores=other_cores, first_loss=first_loss,
      last_loss=float(last["loss"]), grad_norm=float(last["grad_norm"]),
      finite=int(jax.device_get(state.nonfinite_step)) < 0)


def _host_busy():
  """CPU-seconds the whole host has spent busy since boot (/proc/stat), or None."""
  try:
    with open("/proc/stat") as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
  return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _gb(x):
  return "n/a" if x is None else f"{x / 2**30:.2f} GiB"


def _fmt(x):
  return "n/a" if x is None else f"{x:.2f}"


# --- report -----------------------------------------------------------------------------------

def _table(rows, header):
  widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
  line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))
  print(line(header))
  print("  ".join("-" * w for w in widths))
  for r in rows:
    print(line(r))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="fixed,base",
                      help="comma-separated subset of: fixed, base")
  parser.add_argument("--steps", type=int, default=None,
                      help=f"timed steps per config (default {_DEFAULT_STEPS})")
  parser.add_argument("--budget", type=float, default=60.0,
                      help="stop timing a config after this many seconds (min 2 steps)")
  parser.add_argument("--stage", default="semantic", choices=(*token_layout.STAGE_NAMES, "none"),
                      help="whose vocabulary `base` uses (none: 1024 + specials)")
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.configs.split(",") if n.strip()]

  notes = []
  configs = _configs(names, None if args.stage == "none" else args.stage, notes)
  device = jax.devices()[0]
  print(f"jax {jax.__version__}, {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} host cores, 1-device mesh")
  peak_before = matmul_peak()
  print(f"float32 matmul (2048^3 jnp.dot, best of 8): {peak_before / 1e9:.1f} GFLOP/s",
        flush=True)

  results = []
  for name in names:
    cfg, seq, batch = configs[name]
    steps = args.steps or _DEFAULT_STEPS[name]
    print(f"[{name}] emb {cfg.emb_dim}, layers {cfg.num_layers}, heads {cfg.num_heads}x"
          f"{cfg.head_dim}, gated-GELU mlp {cfg.mlp_dim}, vocab {cfg.vocab_size}, seq {seq}, "
          f"batch {batch}, {cfg.dtype}/{cfg.param_dtype}, dropout {cfg.dropout_rate}, "
          f"remat {cfg.remat}", flush=True)
    results.append(bench_config(name, cfg, seq, batch, steps, args.budget))

  peak_after = matmul_peak()
  peak = max(peak_before, peak_after)
  print(f"float32 matmul again after the train steps: {peak_after / 1e9:.1f} GFLOP/s; "
        f"peak = best of both = {peak / 1e9:.1f} GFLOP/s")
  print()
  header = ["config", "params", "N(non-emb)", "tokens/step", "steps", "compile s", "median s",
            "tokens/s", "model GFLOP/step", "XLA GFLOP/step", "GFLOP/s", "% matmul peak"]
  rows = []
  for r in results:
    xla = f"{r['xla_flops'] / 1e9:.1f}" if r["xla_flops"] is not None else "n/a"
    rows.append([r["name"], f"{r['params'] / 1e6:.2f}M", f"{r['non_embedding'] / 1e6:.2f}M",
                 r["seq"] * r["batch"], r["steps"], f"{r['compile_s']:.1f}",
                 f"{r['median_s']:.3f}", f"{r['tokens_per_s']:.0f}", f"{r['flops'] / 1e9:.1f}",
                 xla, f"{r['achieved'] / 1e9:.1f}", f"{100 * r['achieved'] / peak:.1f}"])
  _table(rows, header)
  print()
  for r in results:
    print(f"{r['name']}: model FLOPs = 6*N*tokens {r['dense_flops'] / 1e9:.1f} G + attention "
          f"{r['attention_flops'] / 1e9:.1f} G; step min/median/max "
          f"{r['min_s']:.3f}/{r['median_s']:.3f}/{r['max_s']:.3f} s; first run (excluded) "
          f"{r['warmup_s']:.2f} s; XLA temp buffers {_gb(r['temp_bytes'])}; cores busy "
          f"while timing: this process {r['busy_cores']:.2f}, others "
          f"{_fmt(r['other_cores'])}; "
          f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}, grad_norm {r['grad_norm']:.3f}, "
          f"{'finite' if r['finite'] else 'NON-FINITE'}")
  if any((r["other_cores"] or 0) > 0.25 for r in results):
    notes.append("other processes kept CPU cores busy while timing: step times are "
                 "pessimistic and noisy; rerun on an idle machine for clean numbers")
  for note in notes:
    print(f"note: {note}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
