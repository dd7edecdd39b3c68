"""Runs `python -m musiclm_jax.train` on the tiny synthetic semantic stage in a subprocess."""
import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_FLAGS = ["--gin_file=models/semantic/tiny.gin", "--gin_file=runs/train.gin",
              "--gin_file=tasks/synthetic_stage.gin",
              "--gin.TransformerConfig.emb_dim=32", "--gin.TransformerConfig.mlp_dim=64",
              "--gin.TransformerConfig.dropout_rate=0.1", "--gin.BATCH_SIZE=4",
              "--gin.WARMUP_STEPS=5", "--gin.trainer.train.eval_every=0",
              "--gin.trainer.train.log_every=5"]


def train_command(model_dir, *flags):
  return [sys.executable, "-m", "musiclm_jax.train", *BASE_FLAGS,
          f"--gin.MODEL_DIR='{model_dir}'", *flags]


def env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}


def run_train(model_dir, *flags, timeout=300):
  return subprocess.run(train_command(model_dir, *flags), cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=timeout)


def complete_steps(model_dir):
  """Checkpoint steps whose directories were committed (temporary ones excluded)."""
  root = os.path.join(model_dir, "checkpoints")
  if not os.path.isdir(root):
    return []
  return sorted(int(d) for d in os.listdir(root) if d.isdigit())


def load_params(model_dir, step):
  state = ocp.StandardCheckpointer().restore(os.path.join(model_dir, "checkpoints", str(step), "state"))
  return {"/".join(str(k) for k in path): np.asarray(leaf)
          for path, leaf in __import__("jax").tree_util.tree_leaves_with_path(state["params"])}
