"""Pre-tokenization throughput with the tiny tokenizers: seconds of audio tokenized per second.

Run:  .venv/bin/python bench/pretokenize.py [--clips 64] [--seconds 4] [--beam]

Writes random-init tiny tokenizer checkpoints (the speed does not depend on the weights) and a
synthetic_music set of `clips` training clips, then times

  pipeline  the tokenizing task's pre-cache steps in this process (TFDS read, PCM -> float,
            MuLan + w2v-BERT/k-means + SoundStream through tf.numpy_function), after one
            warm-up clip that compiles the three tokenizers;
  beam      (--beam) the whole `python -m seqio.scripts.cache_tasks_main` DirectRunner run that
            caches both splits: process start, compilation, Beam, TFRecord writing.

Throughput = seconds of audio / wall seconds; above 1 is faster than real time.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import gin  # pylint: disable=g-import-not-at-top,wrong-import-position
import seqio

from musiclm_jax.data import music_tokenizers
from musiclm_jax.stages import token_layout
from musiclm_jax.data import synthetic_music, tfds_audio, token_tasks
from tests.data.test_music_tokenizers import (TOKENS_GIN, parse_tiny_tokenizers_gin,
                                         tiny_tokenizer_bindings, write_tiny_tokenizers)


def pipeline_throughput(config, data_dir: str, task_name: str) -> tuple[float, int]:
  """(audio seconds per wall second, clips) of the task's pre-cache steps, warm."""
  task = seqio.get_mixture_or_task(task_name)
  seqio.set_tfds_data_dir_override(data_dir)
  music_tokenizers.load_music_tokenizers().tokenize(_first_clip(task), config.sample_rate)
  start = time.perf_counter()
  dataset = task.preprocess_precache(task.source.get_dataset("train", shuffle=False))
  clips = sum(1 for _ in dataset.as_numpy_iterator())
  wall = time.perf_counter() - start
  return clips * config.seconds / wall, clips


def _first_clip(task):
  ds = task.source.get_dataset("train", shuffle=False)
  ex = next(ds.as_numpy_iterator())
  return tfds_audio.pcm_to_float(ex["audio"])


def beam_throughput(config, root: str, data_dir: str, cache_dir: str, task_name: str) -> float:
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env[token_tasks.TOKENIZERS_GIN_ENV] = TOKENS_GIN
  env[token_tasks.TOKENIZERS_BINDINGS_ENV] = "; ".join(tiny_tokenizer_bindings(root))
  env["BENCH_PRETOKENIZE_CLIPS"] = str(config.num_train)
  start = time.perf_counter()
  result = subprocess.run(
      [sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=bench.pretokenize",
       f"--tasks={task_name}", f"--output_cache_dir={cache_dir}", f"--tfds_data_dir={data_dir}",
       "--pipeline_options=--runner=DirectRunner"],
      cwd=REPO, env=env, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  if result.returncode:
    raise RuntimeError(result.stderr[-3000:])
  return (config.num_train + config.num_validation) * config.seconds / wall


def bench_config(clips: int, seconds: float):
  return synthetic_music.SyntheticMusicConfig(
      name=f"bench_{clips}x{seconds:g}s".replace(".", "_"),
      description="bench/pretokenize.py", sample_rate=16000, seconds=seconds,
      num_train=clips, num_validation=max(1, clips // 8), seed=3)


# Imported by the --beam run's cache_tasks_main (--module_import=bench.pretokenize).
if os.environ.get("BENCH_PRETOKENIZE_CLIPS"):
  token_tasks.register_synthetic_music_token_tasks(
      bench_config(int(os.environ["BENCH_PRETOKENIZE_CLIPS"]), 4.0), layout=token_layout.TINY)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--clips", type=int, default=64)
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--beam", action="store_true")
  args = parser.parse_args()
  if args.beam and args.seconds != 4.0:
    parser.error("--beam registers 4 s clips in the cache process; leave --seconds at 4")
  config = bench_config(args.clips, args.seconds)
  task_name = token_tasks.register_synthetic_music_token_tasks(config, layout=token_layout.TINY)
  with tempfile.TemporaryDirectory() as tmp:
    root, data_dir, cache_dir = (os.path.join(tmp, d) for d in ("tokenizers", "tfds", "cache"))
    parse_tiny_tokenizers_gin(root)
    write_tiny_tokenizers(root)
    start = time.perf_counter()
    synthetic_music.ensure_built(config, data_dir)
    print(f"built {args.clips} + {config.num_validation} clips of {args.seconds:g} s in "
          f"{time.perf_counter() - start:.1f} s")
    rate, clips = pipeline_throughput(config, data_dir, task_name)
    print(f"pipeline: {clips} clips x {args.seconds:g} s, {rate:.1f} s of audio per second "
          f"(warm, one process, os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.beam:
      rate = beam_throughput(config, root, data_dir, cache_dir, task_name)
      print(f"beam: cache_tasks_main DirectRunner end to end, {rate:.1f} s of audio per second "
            f"(both splits, including start-up and compilation)")
    gin.clear_config()


if __name__ == "__main__":
  main()
