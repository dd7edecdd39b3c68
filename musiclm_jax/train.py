r"""Trains any model of the project from gin files (t5x's `train` entry point).

  python -m musiclm_jax.train \
    --gin_file=models/stage/tiny.gin --gin_file=runs/train_synthetic_semantic.gin \
    --gin.MODEL_DIR="'/tmp/semantic_tiny'" --gin.TRAIN_STEPS=200

Re-running with the same MODEL_DIR resumes from its newest checkpoint. A bad gin file or
binding, an impossible mesh or a NaN loss exits with status 2 and one line naming the cause.
"""
import sys

import gin
from absl import app, flags, logging

from musiclm_jax import gin_utils, trainer
from musiclm_jax.partitioning import MeshError

gin_utils.define_flags()
FLAGS = flags.FLAGS

# Mistakes in the run's configuration or data; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, MeshError, trainer.NonFiniteLossError)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    gin_utils.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    logging.info("Gin config:\n%s", gin.config_str())
    trainer.train()
  except USER_ERRORS as error:
    print(f"musiclm_jax.train: error: {gin_utils.one_line(error)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, argv=gin_utils.rewrite_gin_args(sys.argv))
