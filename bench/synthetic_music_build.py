"""Throughput of building the synthetic_music TFDS set: render + serialise + write.

Run:  .venv/bin/python bench/synthetic_music_build.py [--clips 3000] [--seconds 5] [--rate 16000]

Builds one custom config (all clips in `train`, none in `validation`) with
`synthetic_music.ensure_built` into a fresh temp dir, exactly the single-process path tasks
use, and prints clips/s, audio-seconds/s and the on-disk size. Rendering alone is timed on
the first 200 clips too, so the TFDS share of the time is visible.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import tensorflow_datasets as tfds

from musiclm_jax.data import music_synth
from musiclm_jax.data import synthetic_music


def dir_bytes(path):
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips", type=int, default=3000)
  parser.add_argument("--seconds", type=float, default=5.0)
  parser.add_argument("--rate", type=int, default=16000)
  args = parser.parse_args(argv)
  tfds.disable_progress_bar()

  probe = min(200, args.clips)
  start = time.perf_counter()
  for index in range(probe):
    music_synth.render_clip(index, 0, args.rate, args.seconds)
  render_per_clip = (time.perf_counter() - start) / probe

  config = synthetic_music.SyntheticMusicConfig(
      name=f"bench_{args.clips}x{args.seconds:g}s_{args.rate}", sample_rate=args.rate,
      seconds=args.seconds, num_train=args.clips, num_validation=0)
  data_dir = tempfile.mkdtemp(prefix="synthetic_music_bench_")
  try:
    start, cpu_start = time.perf_counter(), time.process_time()
    synthetic_music.ensure_built(config, data_dir)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    size = dir_bytes(data_dir)
  finally:
    shutil.rmtree(data_dir, ignore_errors=True)

  print(f"{args.clips} clips x {args.seconds:g} s at {args.rate} Hz, {os.cpu_count()} cores")
  print(f"build: {wall:.1f} s wall ({cpu:.1f} s CPU in this process) = "
        f"{args.clips / wall:.1f} clips/s = {args.clips * args.seconds / wall:.0f} "
        f"audio-s/s; {size / 2**20:.0f} MiB on disk")
  print(f"render alone (first {probe} clips): {1000 * render_per_clip:.1f} ms/clip = "
        f"{1 / render_per_clip:.0f} clips/s; TFDS serialise/shuffle/write is the rest")
  return 0


if __name__ == "__main__":
  sys.exit(main())
