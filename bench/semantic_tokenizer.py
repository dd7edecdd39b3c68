"""Real-time factor of the semantic tokenizer (w2v-BERT features + k-means ids) on this machine.

Run:  .venv/bin/python bench/semantic_tokenizer.py [--sizes tiny,paper] [--seconds 10]
                                                  [--batch 1] [--repeats 3]

For every size it builds the model from musiclm_jax/gin/models/w2v_bert/<size>.gin, initialises random
parameters (the speed does not depend on the weights; no checkpoint is needed), draws random
centroids for that size's layout (tiny 64, paper 1024 clusters, SEMANTIC_LAYER from the gin
file) and times `SemanticTokenizer.tokenize` on `batch` clips of `seconds` of noise, exactly
what a user calls (host validation, padding, one jitted features + k-means call).

RTF = wall seconds per call / seconds of audio in the call (batch x seconds); below 1 is
faster than real time. Compilation (first call) is reported separately and excluded.
"""
import argparse
import logging
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import gin
import jax
import numpy as np

from musiclm_jax.semantic import kmeans
from musiclm_jax.core.gin_utils import PACKAGE_GIN_DIR
from musiclm_jax.semantic.semantic_tokenizer import SemanticTokenizer


def load_size(size):
  """(W2vBertModel, SEMANTIC_LAYER, number of clusters) from musiclm_jax/gin/models/w2v_bert/<size>.gin."""
  gin.clear_config()
  root_logger = logging.getLogger()
  level = root_logger.level
  root_logger.setLevel(logging.CRITICAL)  # gin logs every search-path miss as an error
  try:
    gin.add_config_file_search_path(PACKAGE_GIN_DIR)
    gin.parse_config_file(os.path.join(PACKAGE_GIN_DIR, "models", "w2v_bert", f"{size}.gin"))
    model = gin.query_parameter("MODEL/macro.value").scoped_configurable_fn()
    layer = gin.query_parameter("SEMANTIC_LAYER/macro.value")
    layout = gin.query_parameter("LAYOUT/macro.value").scoped_configurable_fn()
  finally:
    gin.clear_config()
    root_logger.setLevel(level)
  return model, layer, layout.semantic_codebook_size


def bench_size(size, seconds, batch, repeats):
  model, layer, clusters = load_size(size)
  cfg = model.config
  start = time.perf_counter()
  init = lambda rng: nn.meta.unbox(model.get_initial_variables(
      rng, {"audio": (1, cfg.hop)})["params"])
  params = jax.block_until_ready(jax.jit(init)(jax.random.key(0)))
  init_s = time.perf_counter() - start
  num_params = sum(x.size for x in jax.tree.leaves(params))
  rng = np.random.default_rng(0)
  centroids = kmeans.SemanticKMeans(
      centroids=rng.normal(size=(clusters, cfg.emb_dim)).astype(np.float32),
      mean=np.zeros(cfg.emb_dim, np.float32), std=np.ones(cfg.emb_dim, np.float32),
      counts=np.ones(clusters, np.float32), layer=layer)
  tokenizer = SemanticTokenizer(model, params, centroids)
  samples = int(seconds * cfg.sample_rate)
  wav = (rng.normal(size=(batch, samples)) * 0.1).astype(np.float32)

  start = time.perf_counter()
  ids = tokenizer.tokenize(wav)
  first_s = time.perf_counter() - start
  times = []
  cpu_start = time.process_time()
  for _ in range(repeats):
    start = time.perf_counter()
    ids = tokenizer.tokenize(wav)
    times.append(time.perf_counter() - start)
  busy = (time.process_time() - cpu_start) / sum(times)
  median = statistics.median(times)
  assert ids.shape == (batch, math.ceil(samples / cfg.hop))
  return dict(size=size, params=num_params, layer=layer, clusters=clusters,
              layers_run=cfg.num_contrastive_layers + layer, init_s=init_s,
              compile_s=first_s - median, median_s=median, min_s=min(times),
              audio_s=batch * seconds, rtf=median / (batch * seconds), tokens=ids.size,
              busy_cores=busy)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="tiny,paper", help="comma-separated gin sizes")
  parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per clip")
  parser.add_argument("--batch", type=int, default=1, help="clips per call")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls per size")
  args = parser.parse_args(argv)
  device = jax.devices()[0]
  print(f"jax {jax.__version__}, {device.platform} ({device.device_kind}), "
        f"{os.cpu_count()} host cores; {args.batch} x {args.seconds:g} s clips at 16 kHz",
        flush=True)
  rows = []
  for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
    r = bench_size(size, args.seconds, args.batch, args.repeats)
    rows.append(r)
    print(f"{r['size']:>6}: {r['params'] / 1e6:8.2f}M params, MLM layer {r['layer']} "
          f"({r['layers_run']} conformer layers run), {r['clusters']} clusters | init "
          f"{r['init_s']:.1f} s, compile {r['compile_s']:.1f} s | tokenize {r['median_s']:.3f} s "
          f"(min {r['min_s']:.3f}) for {r['audio_s']:g} s of audio -> RTF {r['rtf']:.4f} "
          f"({1 / r['rtf']:.1f}x real time), {r['tokens']} tokens, "
          f"{r['busy_cores']:.2f} cores busy", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
