"""Guard rails of the trainer and the entry points: non-finite steps are caught whatever part
of the step they show in, metrics.txt never repeats a step after a resume, and only our own
checks of the configuration turn an error into one line with exit status 2."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.core import gin_utils, partitioning
from musiclm_jax.core.base_model import BaseModel
from musiclm_jax.core.text_metric_writer import TextFileWriter
from musiclm_jax.core.train_state import TrainState
from musiclm_jax.demo import recipe
from tests.train_runner import REPO, env


class _SqrtModel(BaseModel):
  """loss = sum(sqrt(|w|)): finite at w = 0, where its gradient is infinite."""
  FEATURE_CONVERTER_CLS = None

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    return {"params": {"w": jnp.zeros(3)}}

  def loss_fn(self, params, batch, dropout_rng):
    return jnp.sum(jnp.sqrt(jnp.abs(params["w"] - batch["x"]))), {}


class _LinearModel(_SqrtModel):
  """loss = sum(w * x): gradient x, whatever w."""

  def loss_fn(self, params, batch, dropout_rng):
    return jnp.sum(params["w"] * batch["x"]), {}


def _step(params, batch, optimizer, model=_SqrtModel()):
  state = TrainState.create(params, optimizer.init(params))
  return model.train_step(state, batch, jax.random.key(0), optimizer)


def test_a_finite_loss_with_an_infinite_gradient_is_a_nonfinite_step():
  optimizer = optax.sgd(0.1)
  state, metrics = _step({"w": jnp.zeros(3)}, {"x": jnp.zeros(3)}, optimizer)
  assert np.isfinite(float(metrics["loss"]))
  assert int(state.nonfinite_step) == 0  # the step that produced it, never to be saved
  # A healthy step records nothing.
  state, _ = _step({"w": jnp.ones(3)}, {"x": jnp.zeros(3)}, optimizer)
  assert int(state.nonfinite_step) == -1


def test_finite_gradients_that_overflow_the_parameters_are_a_nonfinite_step():
  # float32 max is ~3.4e38: this update is finite, the parameters it writes are not.
  optimizer = optax.sgd(-1e38)
  state, metrics = _step({"w": jnp.array([3e38, -3e38, 0.0])}, {"x": jnp.ones(3)}, optimizer,
                         _LinearModel())
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert not np.all(np.isfinite(np.asarray(state.params["w"])))
  assert int(state.nonfinite_step) == 0


def test_metrics_txt_keeps_only_the_steps_up_to_the_resumed_checkpoint(tmp_path):
  path = tmp_path / "metrics.txt"
  writer = TextFileWriter(path)
  writer.write_hparams({"lr": 1})
  for step in (5, 10, 15, 20, 25):
    writer.write_scalars(step, {"train/loss": step})
  writer.close()
  with path.open("a") as f:
    f.write('{"step": 30, "train/lo')  # the line a kill cut short
  resumed = TextFileWriter(path, resume_step=20)
  resumed.write_scalars(25, {"train/loss": -25.0})
  resumed.close()
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert records[0] == {"hparams": {"lr": "1"}}
  assert [r["step"] for r in records[1:]] == [5, 10, 15, 20, 25]
  assert records[-1]["train/loss"] == -25.0


def test_only_our_own_checks_count_as_configuration_errors():
  with pytest.raises(partitioning.MeshError) as mesh_error:
    partitioning.create_mesh((3, 1, 1))
  assert gin_utils.raised_by_a_check(mesh_error.value)
  with pytest.raises(ValueError) as numpy_error:
    np.zeros(3).reshape(2)
  assert not gin_utils.raised_by_a_check(numpy_error.value)
  with pytest.raises(FileNotFoundError) as missing:
    open(REPO + "/no_such_file.txt", encoding="utf-8")
  assert gin_utils.raised_by_a_check(missing.value)


_FAILING_ENTRY_POINT = """
import sys
import numpy as np
from musiclm_jax.core import gin_utils
def run():
  if sys.argv[-1] == 'library':
    np.zeros(3).reshape(2)  # a ValueError from inside a library: a bug
  from musiclm_jax.core import partitioning
  partitioning.create_mesh((3, 1, 1))
sys.argv = sys.argv[:1]
gin_utils.run_main('probe', run, multi_process=False)
"""


@pytest.mark.parametrize("where", ["library", "check"])
def test_a_library_value_error_keeps_its_traceback_a_check_exits_2(where):
  result = subprocess.run([sys.executable, "-c", _FAILING_ENTRY_POINT.replace(
      "sys.argv[-1]", repr(where)).replace("sys.argv = sys.argv[:1]\n", "")],
      cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
  if where == "library":
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "reshape" in result.stderr
  else:
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("probe: error: mesh_shape (3, 1, 1) needs 3 devices")
    assert "Traceback" not in result.stderr


def _flag(step, name):
  prefix = f"--gin.{name}="
  return int(next(a for a in step.args if a.startswith(prefix))[len(prefix):])


@pytest.mark.parametrize("steps_scale", [1.0, 0.1, 0.001])
def test_the_demo_trainers_lose_at_most_a_tenth_of_their_steps_when_killed(steps_scale,
                                                                          tmp_path):
  trainers = [s for s in recipe.steps(str(tmp_path), steps_scale) if s.module ==
              "musiclm_jax.train"]
  assert len(trainers) == 6
  for step in trainers:
    total = _flag(step, "TRAIN_STEPS")
    every = _flag(step, "trainer.train.checkpoint_every")
    assert every <= max(1, total // 10), (step.name, total, every)
