"""SoundStream encode / decode speed as real-time factors (seconds of audio per second).

Run:  .venv/bin/python bench/codec.py [--configs tiny,paper] [--batches 1,8] [--seconds 2]
                                      [--repeats 3]

For each config and batch size it builds the codec with random weights (speed does not depend
on the weights), warms up `codec.Codec.encode` / `decode` once (jit compilation, reported
separately) and times the median of `--repeats` calls on `--seconds` of audio per example,
float32, on whatever JAX backend is default (CPU here). RTF = batch x seconds / wall time:
above 1 is faster than real time. Encode includes the host-side NaN check of the API.

Configs:
  tiny   musiclm_jax/gin/models/soundstream/tiny.gin: 16 kHz, strides 2-4-5-8, C = 4, D = 32, 4 x 64 codes
  paper  musiclm_jax/gin/models/soundstream/paper.gin: 24 kHz, strides 2-4-6-10, C = 32, D = 512,
         12 x 1024 codes (6 kbps)
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.stages import token_layout
from musiclm_jax.codec.acoustic_tokenizer import Codec
from musiclm_jax.codec.soundstream import SoundStreamCodec, SoundStreamConfig

CONFIGS = {
    "tiny": lambda: SoundStreamConfig(layout=token_layout.TINY, strides=(2, 4, 5, 8), channels=4,
                                      embedding_dim=32),
    "paper": lambda: SoundStreamConfig(layout=token_layout.PAPER, strides=(2, 4, 6, 10),
                                       channels=32, embedding_dim=512),
}


def _timed(fn, repeats):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def bench(name, batch, seconds, repeats):
  cfg = CONFIGS[name]()
  # RngBitGenerator keys: initialising dozens of kernels with threefry compiles for seconds.
  init = jax.jit(SoundStreamCodec(cfg).init)
  variables = nn.meta.unbox(init(jax.random.key(0, impl="rbg"), jnp.zeros((1, cfg.hop))))
  codec = Codec(cfg, variables)
  samples = int(seconds * cfg.sample_rate)
  wav = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, samples)).astype(np.float32)
  encode_first, encode = _timed(lambda: codec.encode(wav), repeats)
  codes = codec.encode(wav)
  decode_first, decode = _timed(lambda: codec.decode(codes), repeats)
  audio = batch * seconds
  print(f"{name:6s} batch {batch:2d}  {seconds:g} s/example  encode RTF {audio / encode:8.2f} "
        f"({encode * 1e3:8.1f} ms, first call {encode_first:5.1f} s)  decode RTF "
        f"{audio / decode:8.2f} ({decode * 1e3:8.1f} ms, first call {decode_first:5.1f} s)",
        flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="tiny,paper")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--seconds", type=float, default=2.0)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"{os.cpu_count()} CPU cores visible, float32")
  for name in args.configs.split(","):
    if name not in CONFIGS:
      raise SystemExit(f"--configs: unknown config {name!r}; expected {sorted(CONFIGS)}")
    for batch in (int(b) for b in args.batches.split(",")):
      bench(name, batch, args.seconds, args.repeats)


if __name__ == "__main__":
  main()
