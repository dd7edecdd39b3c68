"""Time of building a rendered_scores config: parse the scores, render, serialise, write.

Run:  .venv/bin/python bench/rendered_scores_build.py [--config demo] [--data_dir DIR]

Builds the config with `rendered_scores.ensure_built` (the single-process path the tasks and
`python -m musiclm_jax.build_data` take) into a fresh temp dir, or into --data_dir (kept, so the
build can be reused; it must not hold the config yet), and prints wall and CPU time, clips and
audio seconds per second, skips and the on-disk size.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import tensorflow_datasets as tfds

from musiclm_jax.data import rendered_scores
from synthetic_music_build import dir_bytes  # bench/ is on the path of a bench script


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="demo")
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  tfds.disable_progress_bar()
  config = rendered_scores.config_by_name(args.config)
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="rendered_scores_bench_")
  target = os.path.join(data_dir, rendered_scores.NAME, config.name)
  if os.path.exists(target):
    print(f"error: {target} exists; the bench times a fresh build", file=sys.stderr)
    return 2
  try:
    start, cpu_start = time.perf_counter(), time.process_time()
    builder = rendered_scores.ensure_built(config, data_dir)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    size = dir_bytes(target)
    clips = {split: info.num_examples for split, info in builder.info.splits.items()}
    skipped = dict(builder.info.metadata.get("skipped_counts", {}))
  finally:
    if args.data_dir is None:
      shutil.rmtree(data_dir, ignore_errors=True)
  total = sum(clips.values())
  print(f"rendered_scores/{config.name}: {clips} clips x {config.seconds:g} s at "
        f"{config.sample_rate} Hz, {os.cpu_count()} cores; skipped {skipped}")
  print(f"build: {wall:.1f} s wall ({cpu:.1f} s CPU in this process) = {total / wall:.2f} "
        f"clips/s = {total * config.seconds / wall:.1f} audio-s/s; {size / 2**20:.0f} MiB on disk")
  return 0


if __name__ == "__main__":
  sys.exit(main())
