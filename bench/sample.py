"""Sampling throughput of a stage: KV-cached `temperature_sample` vs. recomputing everything.

Run:  .venv/bin/python bench/sample.py [--new 128] [--prompt 64] [--batches 1,8]

Config: emb_dim 512, 6 layers, 8 heads x 64, gated MLP 2048, vocab 1024 + specials, float32,
random weights (speed does not depend on them). A prompt of `--prompt` tokens, then `--new`
sampled tokens at temperature 1.

- cache:   `DecoderOnlyModel.predict_batch_with_aux` — prefill once, then one `lax.while_loop`
           step per token over the KV cache (what inference uses);
- nocache: the same number of tokens, each from a full forward over the whole sequence
           (jitted; a Python loop over positions) — the cost the cache removes.
Tokens/s counts sampled tokens for the whole batch; compile time is excluded.

The memory roofline: a decoding step must read every parameter and the live KV cache (keys
and values of the positions so far, averaged over the sampled positions) at least once. Over
the machine's read bandwidth (measured here: a jitted sum over a 256 MiB float32 array, best
of 10) that bounds the tokens/s of a batch; the table prints it and how far the cached
sampler is from it.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.stages import token_layout
from musiclm_jax.stages.stage_model import DecoderOnlyModel
from musiclm_jax.stages.transformer import DecoderOnlyTransformer, TransformerConfig

CONFIG = TransformerConfig(vocab_size=1024 + token_layout.NUM_SPECIAL_IDS, emb_dim=512, num_heads=8,
                           head_dim=64, mlp_dim=2048, num_layers=6, dropout_rate=0.0)


PROMPT, NEW = 64, 128


def build_model(length: int):
  model = DecoderOnlyModel(DecoderOnlyTransformer(CONFIG))
  params = nn.meta.unbox(model.get_initial_variables(
      jax.random.key(0), {"decoder_input_tokens": (1, length)})["params"])
  return model, params


def _batch(batch, prompt, new, rng):
  length = prompt + new + 1
  ids = rng.integers(token_layout.NUM_SPECIAL_IDS, CONFIG.vocab_size, (batch, prompt))
  inputs = np.zeros((batch, length), np.int32)
  inputs[:, 1:prompt + 1] = ids
  causal = np.zeros((batch, length), np.int32)
  causal[:, :prompt + 1] = 1
  return {"decoder_input_tokens": jnp.asarray(inputs),
          "decoder_causal_attention": jnp.asarray(causal)}


def _timed(fn, repeats=2):
  jax.block_until_ready(fn())  # compile + first run
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def bench_cache(model, params, batch, new):
  sample = jax.jit(lambda p, b, r: model.predict_batch_with_aux(
      p, b, r, decoder_params={"temperature": 1.0, "max_decode_steps": new})[0])
  return _timed(lambda: sample(params, batch, jax.random.key(0)))


def bench_nocache(model, params, batch, prompt, new):
  forward = jax.jit(lambda p, tokens_, causal: model.module.apply(
      {"params": p}, tokens_, jnp.ones_like(tokens_), decoder_causal_attention=causal,
      enable_dropout=False))
  pick = jax.jit(lambda logits, position, rng: jax.random.categorical(rng, logits[:, position]))

  def run():
    seq = batch["decoder_input_tokens"]
    rng = jax.random.key(0)
    for position in range(prompt, prompt + new):
      rng, step = jax.random.split(rng)
      token = pick(forward(params, seq, batch["decoder_causal_attention"]), position, step)
      seq = seq.at[:, position + 1].set(token.astype(seq.dtype))
    return seq

  return _timed(run, repeats=1)


def read_bandwidth(mib: int = 256, repeats: int = 10) -> float:
  """Bytes/s a jitted reduction streams from memory (an array far beyond the caches)."""
  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  total = jax.jit(jnp.sum)
  jax.block_until_ready(total(x))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(total(x))
    best = min(best, time.perf_counter() - start)
  return x.size * 4 / best


def decode_step_bytes(params, batch_size: int, prompt: int, new: int) -> float:
  """Parameters plus the live KV cache, averaged over the sampled positions."""
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  mean_length = prompt + (new + 1) / 2
  per_position = 2 * CONFIG.num_layers * CONFIG.num_heads * CONFIG.head_dim * 4
  return param_bytes + batch_size * mean_length * per_position


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--new", type=int, default=NEW)
  parser.add_argument("--prompt", type=int, default=PROMPT)
  parser.add_argument("--batches", default="1,8")
  args = parser.parse_args()
  model, params = build_model(args.prompt + args.new + 1)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores; "
        f"emb 512, 6 layers, 8x64 heads, mlp 2048, vocab {CONFIG.vocab_size}, float32; "
        f"prompt {args.prompt}, {args.new} new tokens")
  bandwidth = read_bandwidth()
  print(f"measured read bandwidth: {bandwidth / 1e9:.1f} GB/s")
  print(f"{'batch':>5}  {'mode':>7}  {'seconds':>8}  {'tokens/s':>9}  {'speed-up':>8}  "
        f"{'roofline tokens/s':>17}  {'of roofline':>11}")
  rng = np.random.default_rng(0)
  for batch_size in [int(b) for b in args.batches.split(",")]:
    batch = _batch(batch_size, args.prompt, args.new, rng)
    cached = bench_cache(model, params, batch, args.new)
    uncached = bench_nocache(model, params, batch, args.prompt, args.new)
    roofline = batch_size * bandwidth / decode_step_bytes(params, batch_size, args.prompt,
                                                          args.new)
    for mode, seconds in (("cache", cached), ("nocache", uncached)):
      tokens_per_s = batch_size * args.new / seconds
      print(f"{batch_size:>5}  {mode:>7}  {seconds:>8.2f}  {tokens_per_s:>9.1f}"
            f"  {uncached / seconds:>7.1f}x  {roofline:>17.0f}  {tokens_per_s / roofline:>10.0%}")


if __name__ == "__main__":
  main()
