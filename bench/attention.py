"""The stage Transformer's three attention paths side by side: memory and time of a train
step's forward + backward, as the sequence grows.

Run:  .venv/bin/python bench/attention.py [--lengths 512,1024,2048] [--paths ...] [--steps N]

For each length and path ('reference', 'blockwise', 'flash') it jits the loss and gradients of
`DecoderOnlyTransformer` (emb 256, 4 heads x 64, 4 layers, MLP 1024, batch 2, blocks of 512,
a random prefix per example, float32) and prints XLA's temporaries for the compiled step
(`memory_analysis().temp_size_in_bytes`) and the median step time over --steps runs.

What the numbers mean on a CPU: the temporaries show what each path keeps alive, which is
the same question on TPU (reference holds a [batch, heads, T, T] score, weight and mask per
layer; blockwise only blocks; flash one [batch, heads, T, T] bias + mask per forward and its
gradient). The times do not transfer: off TPU the flash kernel runs under Pallas's
interpreter, and XLA:CPU fuses differently from XLA:TPU.
"""
import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.stages.transformer import DecoderOnlyTransformer, TransformerConfig


def _batch(length: int, batch: int = 2):
  rng = np.random.default_rng(0)
  targets = rng.integers(2, 512, (batch, length))
  inputs = np.concatenate([np.zeros((batch, 1), targets.dtype), targets[:, :-1]], axis=1)
  prefix = rng.integers(1, length // 2, (batch, 1))
  causal = (np.arange(length)[None, :] < prefix).astype(np.int32)
  return tuple(jnp.asarray(x) for x in (inputs, targets, causal))


def _step(path: str, length: int):
  config = TransformerConfig(vocab_size=512, emb_dim=256, num_heads=4, head_dim=64,
                             mlp_dim=1024, num_layers=4, dropout_rate=0.0, attention=path,
                             attention_block_size=512)
  module = DecoderOnlyTransformer(config)
  inputs, targets, causal = _batch(length)
  params = nn.meta.unbox(module.init(jax.random.key(0), inputs, enable_dropout=False)["params"])

  def loss(p):
    logits = module.apply({"params": p}, inputs, targets, decoder_causal_attention=causal,
                          enable_dropout=False)
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)
    return -jnp.mean(picked)

  step = jax.jit(jax.value_and_grad(loss))
  return step.lower(params).compile(), params


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", default="512,1024,2048")
  parser.add_argument("--paths", default="reference,blockwise,flash")
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s)")
  print("| T | path | temporaries MiB | compile s | median step s |")
  print("|---|---|---|---|---|")
  for length in (int(x) for x in args.lengths.split(",")):
    for path in args.paths.split(","):
      start = time.perf_counter()
      compiled, params = _step(path, length)
      compile_s = time.perf_counter() - start
      temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
      jax.block_until_ready(compiled(params))
      times = []
      for _ in range(args.steps):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - start)
      print(f"| {length} | {path} | {temp:.0f} | {compile_s:.1f} | "
            f"{statistics.median(times):.3f} |", flush=True)


if __name__ == "__main__":
  main()
