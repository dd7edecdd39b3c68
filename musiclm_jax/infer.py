r"""Batch inference with a trained stage (t5x's `infer` entry point and output files).

  python -m musiclm_jax.infer \
    --gin_file=models/semantic/tiny.gin --gin_file=runs/infer.gin \
    --gin_file=tasks/synthetic_stage.gin \
    --gin.CHECKPOINT_DIR="'output/semantic_tiny'" --gin.INFER_OUTPUT_DIR="'output/infer'"

Writes `{task}-{mode}.jsonl-NNNNN-of-NNNNN` (+ `.COMPLETED`) in INFER_OUTPUT_DIR and prints
its path; rerun after a kill, it resumes. Errors in the configuration exit 2 with one line.
"""
import sys

from absl import app, flags

from musiclm_jax import gin_utils, inference
from musiclm_jax.partitioning import MeshError

gin_utils.define_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    print(inference.infer())
  except (ValueError, FileNotFoundError, MeshError) as error:
    print(f"musiclm_jax.infer: error: {gin_utils.one_line(error)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, argv=gin_utils.rewrite_gin_args(sys.argv))
