"""The `musiclm_jax.train` command: errors, NaN guard and exact resume after SIGKILL."""
import json
import os
import signal
import subprocess
import time

import numpy as np

from tests.train_runner import (REPO, complete_steps, env, load_params, run_train,
                                train_command)


def _last_line(stderr):
  return [line for line in stderr.strip().splitlines() if line.strip()][-1]


def _assert_metrics_written(model_dir):
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(model_dir))
  records = [json.loads(line) for line in (model_dir / "metrics.txt").read_text().splitlines()]
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert len(losses) >= 10 and losses[-1] < losses[0]
  assert any("steps_per_sec" in r for r in records)


def test_wrong_gin_binding_exits_with_one_clear_line(tmp_path):
  result = run_train(tmp_path, "--gin.TRAIN_STEPS=3", "--gin.trainer.train.not_a_knob=1")
  assert result.returncode == 2
  line = _last_line(result.stderr)
  assert line.startswith("musiclm_jax.train: error:") and "not_a_knob" in line


def test_impossible_mesh_exits_with_one_clear_line(tmp_path):
  result = run_train(tmp_path, "--gin.TRAIN_STEPS=3",
                     "--gin.partitioning.create_mesh.mesh_shape=(3, 1, 1)")
  assert result.returncode == 2
  line = _last_line(result.stderr)
  assert line.startswith("musiclm_jax.train: error:")
  assert "mesh_shape (3, 1, 1) needs 3 devices" in line


def test_missing_gin_file_is_named(tmp_path):
  result = run_train(tmp_path, "--gin_file=runs/nope.gin", "--gin.TRAIN_STEPS=3")
  assert result.returncode == 2 and "runs/nope.gin" in _last_line(result.stderr)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  # A huge SGD step without clipping blows the parameters up within a few steps.
  result = run_train(tmp_path, "--gin.TRAIN_STEPS=50", "--gin.optimizers.create.name='sgd'",
                     "--gin.optimizers.create.clip_norm=0.0", "--gin.LEARNING_RATE=1e12",
                     "--gin.WARMUP_STEPS=0", "--gin.trainer.train.log_every=1",
                     "--gin.trainer.train.checkpoint_every=1")
  assert result.returncode == 2, result.stderr[-2000:]
  line = _last_line(result.stderr)
  assert "NaN/Inf at step" in line and "gradients" in line, line
  bad_step = int(line.split("NaN/Inf at step ")[1].split(";")[0])
  steps = complete_steps(tmp_path)
  assert steps and max(steps) <= bad_step
  params = load_params(tmp_path, max(steps))
  assert all(np.all(np.isfinite(p)) for p in params.values())


def test_resume_after_sigkill_is_bit_identical(tmp_path):
  total = 400
  flags = (f"--gin.TRAIN_STEPS={total}", "--gin.trainer.train.checkpoint_every=10")
  reference = run_train(tmp_path / "reference", *flags)
  assert reference.returncode == 0, reference.stderr[-2000:]
  _assert_metrics_written(tmp_path / "reference")
  assert complete_steps(tmp_path / "reference") == [380, 390, 400]  # keep-N, N = 3

  killed_dir = tmp_path / "killed"
  proc = subprocess.Popen(train_command(killed_dir, *flags), cwd=REPO, env=env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if any(step >= 20 for step in complete_steps(killed_dir)):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
  interrupted_at = max(complete_steps(killed_dir))
  assert interrupted_at < total

  resumed = run_train(killed_dir, *flags)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"Starting at step {interrupted_at} of {total} (resumed)" in resumed.stderr
  # The killed run's lines past its checkpoint were dropped: every step appears once, as in
  # the run that was never killed.
  def logged_steps(model_dir):
    records = [json.loads(line) for line in (model_dir / "metrics.txt").read_text().splitlines()]
    return [r["step"] for r in records if "train/loss" in r]
  assert logged_steps(killed_dir) == logged_steps(tmp_path / "reference")
  expected, actual = load_params(tmp_path / "reference", total), load_params(killed_dir, total)
  assert expected.keys() == actual.keys()
  for name in expected:
    np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def test_config_gin_is_written_and_a_different_run_cannot_resume(tmp_path):
  first = run_train(tmp_path, "--gin.TRAIN_STEPS=2", "--gin.trainer.train.checkpoint_every=2")
  assert first.returncode == 0, first.stderr[-2000:]
  config = (tmp_path / "config.gin").read_text()
  assert "TransformerConfig.emb_dim = 32" in config and "TRAIN_STEPS = 2" in config
  signature = json.loads((tmp_path / "run_signature.json").read_text())
  assert signature["model"] == "DecoderOnlyModel" and signature["params"]
  kept = (tmp_path / "checkpoints").stat().st_mtime_ns, sorted(os.listdir(tmp_path))

  wider = run_train(tmp_path, "--gin.TRAIN_STEPS=4", "--gin.TransformerConfig.mlp_dim=128")
  assert wider.returncode == 2
  line = _last_line(wider.stderr)
  assert line.startswith("musiclm_jax.train: error:") and "different run" in line, line
  assert "params:" in line and "128" in line, line
  other_optimizer = run_train(tmp_path, "--gin.TRAIN_STEPS=4",
                              "--gin.optimizers.create.name='adafactor'")
  assert other_optimizer.returncode == 2
  assert "optimizer_bindings" in _last_line(other_optimizer.stderr)
  # Nothing of the first run was touched: its config, record and checkpoints stand.
  assert (tmp_path / "config.gin").read_text() == config
  assert kept == ((tmp_path / "checkpoints").stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
  assert complete_steps(tmp_path) == [2]

  # The same model and optimizer with a longer run resumes, keeping the earlier config.
  longer = run_train(tmp_path, "--gin.TRAIN_STEPS=4", "--gin.trainer.train.checkpoint_every=2")
  assert longer.returncode == 0, longer.stderr[-2000:]
  assert complete_steps(tmp_path) == [2, 4]
  assert (tmp_path / "config.before_step_2.gin").read_text() == config
  assert "TRAIN_STEPS = 4" in (tmp_path / "config.gin").read_text()
