"""Semantic tokenizer: checkpoint + centroids -> 25 Hz ids; the `fit_kmeans` command."""
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from musiclm_jax.core import checkpoints, trainer
from musiclm_jax.semantic import kmeans, semantic_tokenizer
from musiclm_jax.semantic.semantic_tokenizer import SemanticTokenizer
from musiclm_jax.core.train_state import TrainState
from tests.w2v_bert_helpers import CLIP_SAMPLES, TASK, init_params, tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLUSTERS = 16


def _write_checkpoint(model, model_dir, step=3):
  """A trainer-format checkpoint (TrainState with optimizer state) of fresh parameters."""
  params = init_params(model, seed=step)
  optimizer = optax.adam(1e-3)
  manager = checkpoints.create_manager(model_dir / "checkpoints")
  checkpoints.save(manager, step, TrainState.create(params, optimizer.init(params)))
  manager.wait_until_finished()
  manager.close()
  return params


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("w2v_bert")
  model = tiny_model()
  _write_checkpoint(model, directory)
  semantic_tokenizer.fit_kmeans(
      model=model, model_dir=str(directory),
      dataset_cfg=trainer.DatasetConfig(TASK, {"audio": CLIP_SAMPLES}, batch_size=4),
      layer=1, num_clusters=NUM_CLUSTERS, num_steps=4, statistics_batches=2, init_batches=1)
  return directory


@pytest.fixture(scope="module")
def tokenizer(model_dir):
  return SemanticTokenizer.from_model_dir(model_dir, tiny_model())


def _wav(batch, samples, seed=0):
  return (np.random.default_rng(seed).normal(size=(batch, samples)) * 0.1).astype(np.float32)


def test_fit_writes_centroids_and_statistics_next_to_the_model(model_dir):
  fitted = kmeans.SemanticKMeans.load(model_dir / "semantic_kmeans.npz")
  assert fitted.centroids.shape == (NUM_CLUSTERS, 32) and fitted.layer == 1
  assert fitted.mean.shape == fitted.std.shape == (32,) and np.all(fitted.std > 0)
  # 4 steps x 4 clips x 25 frames went through the mini-batch updates.
  assert int(fitted.counts.sum()) == 4 * 4 * 25


@pytest.mark.parametrize("samples", [1, 639, 640, 641, 16001])
def test_tokens_come_at_25_hz_for_any_length(tokenizer, samples):
  ids = tokenizer.tokenize(_wav(2, samples))
  assert ids.shape == (2, math.ceil(samples / 640)) and ids.dtype == np.int32
  assert ids.min() >= 0 and ids.max() < NUM_CLUSTERS
  assert tokenizer.frame_rate == 25.0 and tokenizer.num_tokens(samples) == ids.shape[1]


def test_tokenize_is_deterministic_and_independent_of_the_batch(model_dir, tokenizer):
  wav = _wav(3, 8000, seed=1)
  first = tokenizer.tokenize(wav)
  np.testing.assert_array_equal(tokenizer.tokenize(wav), first)
  np.testing.assert_array_equal(tokenizer.tokenize(wav[1:2]), first[1:2])
  fresh = SemanticTokenizer.from_model_dir(model_dir, tiny_model())
  np.testing.assert_array_equal(fresh.tokenize(wav), first)


def test_tokens_use_the_stored_normalisation(model_dir, tokenizer):
  wav = _wav(2, 3200, seed=2)
  model = tiny_model()
  features = jax.jit(lambda p, w: model.features(p, w, 1))(tokenizer.params, wav)
  fitted = kmeans.SemanticKMeans.load(model_dir / "semantic_kmeans.npz")
  np.testing.assert_array_equal(tokenizer.tokenize(wav), np.asarray(fitted.tokens(features)))


def test_bad_wav_is_named(tokenizer):
  with pytest.raises(ValueError, match=r"\[batch, samples\].*wav\[None\]"):
    tokenizer.tokenize(np.zeros(640, np.float32))
  with pytest.raises(ValueError, match=r"\[batch, samples\]"):
    tokenizer.tokenize(np.zeros((1, 2, 640), np.float32))
  with pytest.raises(ValueError, match="empty"):
    tokenizer.tokenize(np.zeros((1, 0), np.float32))
  with pytest.raises(ValueError, match="dtype int16"):
    tokenizer.tokenize(np.zeros((1, 640), np.int16))
  nan = _wav(3, 640)
  nan[2, 5] = np.nan
  with pytest.raises(ValueError, match=r"NaN/Inf samples in batch rows \[2\]"):
    tokenizer.tokenize(nan)


def test_missing_centroids_or_checkpoint_are_named(model_dir, tmp_path):
  missing = tmp_path / "centroids.npz"
  with pytest.raises(FileNotFoundError, match=str(missing)):
    SemanticTokenizer.from_model_dir(model_dir, tiny_model(), centroids_file=str(missing))
  shutil.copy(model_dir / "semantic_kmeans.npz", tmp_path / "semantic_kmeans.npz")
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "checkpoints")):
    SemanticTokenizer.from_model_dir(tmp_path, tiny_model())


def test_centroids_of_another_width_are_rejected(model_dir, tokenizer):
  fitted = kmeans.SemanticKMeans.load(model_dir / "semantic_kmeans.npz")
  narrow = kmeans.SemanticKMeans(fitted.centroids[:, :8], fitted.mean[:8], fitted.std[:8],
                                 fitted.counts, 1)
  with pytest.raises(ValueError, match="dimension 8"):
    SemanticTokenizer(tokenizer.model, tokenizer.params, narrow)


def _fit_command(model_dir, task_gin, *flags):
  return [sys.executable, "-m", "musiclm_jax.fit_kmeans", "--gin_file=models/w2v_bert/tiny.gin",
          "--gin_file=runs/fit_kmeans.gin", f"--gin_file={task_gin}",
          f"--gin.MODEL_DIR='{model_dir}'", *flags]


@pytest.mark.slow
def test_fit_kmeans_command_writes_the_centroid_file_or_names_the_problem(model_dir, tmp_path):
  task_gin = tmp_path / "task.gin"
  task_gin.write_text(f"import tests.w2v_bert_helpers\nMIXTURE_OR_TASK_NAME = '{TASK}'\n"
                      f"TASK_FEATURE_LENGTHS = {{'audio': {CLIP_SAMPLES}}}\n")
  run_dir = tmp_path / "model"
  shutil.copytree(model_dir / "checkpoints", run_dir / "checkpoints")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run(
      _fit_command(run_dir, task_gin, "--gin.BATCH_SIZE=4",
                   "--gin.semantic_tokenizer.fit_kmeans.num_steps=3",
                   "--gin.semantic_tokenizer.fit_kmeans.statistics_batches=2",
                   "--gin.semantic_tokenizer.fit_kmeans.init_batches=1"),
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert str(run_dir / "semantic_kmeans.npz") in result.stdout.splitlines()
  assert "steps/s" in result.stderr  # progress is logged
  fitted = kmeans.SemanticKMeans.load(run_dir / "semantic_kmeans.npz")
  assert fitted.num_clusters == 64  # the tiny token layout's semantic codebook

  empty = tmp_path / "empty"
  result = subprocess.run(_fit_command(empty, task_gin), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode == 2 and last.startswith("musiclm_jax.fit_kmeans: error:")
  assert str(empty / "checkpoints") in last
