r"""The end-to-end demo: text -> music from nothing, on a CPU, in one command.

  python -m musiclm_jax.demo --output_dir=output/demo

builds the synthetic captioned-music set, trains the six parts (SoundStream, w2v-BERT +
k-means, MuLan + RVQ, the semantic / coarse / fine stages) at tiny size, pre-tokenizes the
set with seqio's Beam cache, generates audio for a handful of prompts, evaluates it and
writes the listening page. Each step is the gin command a user would run (`--dry_run`
prints them all); a rerun skips the finished steps.
"""
import os
import time

from absl import app, flags

from musiclm_jax.demo import recipe as demo_recipe
from musiclm_jax.demo import step_runner
from musiclm_jax.core import files

flags.DEFINE_string("output_dir", os.path.join("output", "demo"),
                    "Where every part of the demo goes (relative to the working directory).")
flags.DEFINE_bool("dry_run", False, "Print the commands of every step and exit.")
flags.DEFINE_float("steps_scale", 1.0, "Multiplies every training length (0.1: a smoke run).")
flags.DEFINE_list("only", [], "Run only these steps (still skipping finished ones).")


def _write_timings(path: str, seconds: dict) -> None:
  files.write_json(path, {k: round(v, 1) for k, v in seconds.items() if v is not None})


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if flags.FLAGS.steps_scale <= 0:
    raise app.UsageError(f"--steps_scale must be > 0, got {flags.FLAGS.steps_scale}")
  recipe = demo_recipe.steps(flags.FLAGS.output_dir, flags.FLAGS.steps_scale)
  unknown = set(flags.FLAGS.only) - {s.name for s in recipe}
  if unknown:
    raise app.UsageError(f"--only: unknown steps {sorted(unknown)}; the steps are "
                         f"{[s.name for s in recipe]}")
  if flags.FLAGS.dry_run:
    for step in recipe:
      print(f"# {step.name}: {step.description}\n{step.shell_line()}")
    return
  start = time.time()
  # One persistent XLA compilation cache for every step: the held-out generation reuses what
  # the first one compiled, and a rerun after a kill skips the compiles of the steps it redoes.
  # It changes no result, so it is not part of any step's command (nor of its fingerprint).
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.abspath(
      os.path.join(flags.FLAGS.output_dir, "jax_compilation_cache")))
  state_dir = os.path.join(flags.FLAGS.output_dir, "steps")
  summary = os.path.join(flags.FLAGS.output_dir, "timings.json")
  try:
    step_runner.run_steps(recipe, state_dir, cwd=os.getcwd(), only=flags.FLAGS.only)
  except step_runner.StepFailed as error:
    _write_timings(summary, step_runner.recorded_seconds(recipe, state_dir))
    print(f"[demo] {error}\n[demo] rerun the same command to continue from that step.")
    raise SystemExit(1)
  # Every finished step's time, from its marker: a resumed run keeps the earlier runs' times.
  _write_timings(summary, step_runner.recorded_seconds(recipe, state_dir))
  print(f"[demo] finished in {time.time() - start:.0f} s; step times in {summary}")
  page = os.path.join(demo_recipe.Paths(os.path.abspath(flags.FLAGS.output_dir)).generations,
                      "index.html")
  if os.path.exists(page):
    print(f"[demo] listening page: file://{page}")


if __name__ == "__main__":
  app.run(main)
