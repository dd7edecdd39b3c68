r"""Trains any model of the project from gin files (t5x's `train` entry point).

  python -m musiclm_jax.train \
    --gin_file=models/semantic/tiny.gin --gin_file=runs/train.gin \
    --gin_file=tasks/synthetic_stage.gin \
    --gin.MODEL_DIR="'/tmp/semantic_tiny'" --gin.TRAIN_STEPS=200

Re-running with the same MODEL_DIR resumes from its newest checkpoint. A bad gin file or
binding, an impossible mesh or a NaN loss exits with status 2 and one line naming the cause.
"""
from musiclm_jax.core import gin_utils, trainer

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.train", trainer.train,
                     (ValueError, FileNotFoundError, trainer.NonFiniteLossError))
