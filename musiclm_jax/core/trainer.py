"""The one train loop of the project: stages, SoundStream, w2v-BERT and MuLan all train here.

The loop owns the mesh, shardings, checkpoints, metrics and the NaN guard; the model owns its
math through the `BaseModel` hooks (`get_initial_variables`, `train_step`, `eval_step`).
"""
import dataclasses
import functools
from typing import Callable, Mapping, Optional

import flax.linen as nn
import gin
import jax
import numpy as np
import optax
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from musiclm_jax.core import checkpoints, input_pipeline, partitioning, run_config
from musiclm_jax.core.text_metric_writer import TextFileWriter
from musiclm_jax.core.base_model import BaseModel
from musiclm_jax.core.train_state import TrainState


class NonFiniteLossError(RuntimeError):
  """A step's loss, gradients or updated variables held a NaN/Inf; the run stopped without
  checkpointing that step's state or any later one."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """Which seqio task feeds a run (t5x's DatasetConfig). batch_size is global."""
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str = "train"
  batch_size: int = 8
  shuffle: bool = True
  seed: Optional[int] = 0
  use_cached: bool = False
  pack: bool = False
  num_epochs: Optional[int] = None


def make_dataset(cfg: DatasetConfig, feature_converter_cls, drop_remainder: bool = True):
  return input_pipeline.get_dataset(
      cfg.mixture_or_task_name, dict(cfg.task_feature_lengths), cfg.split, cfg.batch_size,
      feature_converter_cls, shuffle=cfg.shuffle, seed=cfg.seed, num_epochs=cfg.num_epochs,
      use_cached=cfg.use_cached, pack=cfg.pack, drop_remainder=drop_remainder)


def global_input_shapes(iterator: input_pipeline.DatasetIterator):
  """`{feature: ShapeDtypeStruct}` of one global batch (process batches stacked)."""
  return {name: jax.ShapeDtypeStruct((shape[0] * jax.process_count(), *shape[1:]), dtype)
          for name, (shape, dtype) in iterator.element_spec.items()}


@dataclasses.dataclass
class ShardedSetup:
  """Everything needed to place and step a model's TrainState on a mesh."""
  mesh: jax.sharding.Mesh
  rules: tuple
  optimizer: optax.GradientTransformation
  state_shapes: TrainState       # ShapeDtypeStructs
  state_shardings: TrainState    # NamedShardings
  init_fn: Callable              # rng -> TrainState, sharded

  def abstract_state(self):
    return checkpoints.abstract_with_shardings(self.state_shapes, self.state_shardings)


def shard_model(model: BaseModel, optimizer: optax.GradientTransformation,
                input_shapes: Mapping[str, jax.ShapeDtypeStruct], mesh, rules) -> ShardedSetup:
  """Derives every sharding from the model's logical annotations, without allocating."""
  shapes = {k: v.shape for k, v in input_shapes.items()}
  types = {k: v.dtype for k, v in input_shapes.items()}

  def init_variables(rng):
    return model.get_initial_variables(rng, shapes, types)

  def init_state(rng):
    variables = dict(nn.meta.unbox(init_variables(rng)))
    params = variables.pop("params")
    return TrainState.create(params, optimizer.init(params), variables)

  # An abstract key: a concrete one would be placed on the mesh, which for an ahead-of-time
  # compile (plan.py) holds compile-only TPU devices that cannot run anything.
  rng = jax.eval_shape(jax.random.key, 0)
  # Traced for the mesh's platform, with no device to place anything on: a kernel with a TPU
  # lowering (flash attention) must pick it for a TPU mesh even from a CPU host.
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    boxed = dict(jax.eval_shape(init_variables, rng))
    state_shapes = jax.eval_shape(init_state, rng)
  param_shardings = partitioning.logical_to_shardings(mesh, boxed.pop("params"), rules)
  model_state_shardings = partitioning.logical_to_shardings(mesh, boxed, rules)
  replicated = partitioning.replicated(mesh)
  state_shardings = TrainState(
      step=replicated, params=param_shardings,
      opt_state=partitioning.opt_state_shardings(optimizer, state_shapes.opt_state,
                                                 param_shardings, mesh),
      model_state=model_state_shardings, nonfinite_step=replicated)
  # The initialisation runs once, in milliseconds; on CPU, LLVM's optimisations were 10 of the
  # 15 s its compile took for the tiny SoundStream (bench/init_compile.py), paid by every
  # training process before its first step.
  on_cpu = mesh.devices.flat[0].platform == "cpu"
  init_fn = jax.jit(init_state, out_shardings=state_shardings,
                    compiler_options=RUN_ONCE_COMPILER_OPTIONS if on_cpu else None)
  return ShardedSetup(mesh, rules, optimizer, state_shapes, state_shardings, init_fn)


# How `shard_model` compiles the initialisation on CPU.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_train_step(model: BaseModel, setup: ShardedSetup, batch_shardings,
                   num_microbatches: int = 1, phase: Optional[str] = None):
  """`(state, batch, rng) -> (state, metrics)`, jitted with the run's shardings and the state
  donated. The one construction of the step: `train` runs it, plan.py compiles it for a TPU
  slice ahead of time. `phase`: a name from `model.train_phase` (None: the full step)."""
  replicated = partitioning.replicated(setup.mesh)
  phase_kwargs = {} if phase is None else {"phase": phase}
  return jax.jit(
      functools.partial(model.train_step, optimizer=setup.optimizer,
                        num_microbatches=num_microbatches, **phase_kwargs),
      in_shardings=(setup.state_shardings, batch_shardings, replicated),
      out_shardings=(setup.state_shardings, replicated),
      donate_argnums=(0,))


def _mean_metrics(pending: list) -> dict:
  fetched = jax.device_get(pending)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def _check_finite(state: TrainState, manager) -> None:
  bad_step = int(jax.device_get(state.nonfinite_step))
  if bad_step >= 0:
    manager.wait_until_finished()
    latest = manager.latest_step()
    kept = (f"the last good checkpoint is step {latest} in {manager.directory}"
            if latest is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"loss, gradients or updated parameters became NaN/Inf at step {bad_step}; stopped "
        f"without saving that step's state — {kept}. "
        "Lower the learning rate, enable gradient clipping or check the data.")


@gin.configurable
def train(*, model: BaseModel, train_dataset_cfg: DatasetConfig, model_dir: str,
          total_steps: int, optimizer_fn: Callable = gin.REQUIRED,
          lr_schedule: Optional[optax.Schedule] = None,
          eval_dataset_cfg: Optional[DatasetConfig] = None, eval_every: int = 0,
          eval_steps: int = 10, log_every: int = 10, checkpoint_every: int = 100,
          num_microbatches: int = 1, seed: int = 0) -> TrainState:
  """Trains `model` to `total_steps`, resuming from the newest checkpoint in `model_dir`.

  Writes `{model_dir}/checkpoints/<step>/` (orbax), TensorBoard events, `metrics.txt`, and at
  start `config.gin` + `run_signature.json` (core/run_config.py); a resume into a directory
  of another model or optimizer stops with RunConfigMismatchError before anything is written.
  The mesh and logical rules come from gin (`create_mesh.mesh_shape`, `logical_axis_rules`).
  Returns the final state.
  """
  for name, value in (("total_steps", total_steps), ("log_every", log_every),
                      ("checkpoint_every", checkpoint_every),
                      ("num_microbatches", num_microbatches)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
  mesh = partitioning.create_mesh()
  rules = partitioning.logical_axis_rules()
  model_dir = epath.Path(model_dir)
  logging.info("Mesh %s", partitioning.describe(mesh))
  optimizer = model.make_optimizer(optimizer_fn, lr_schedule)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    converter = model.FEATURE_CONVERTER_CLS
    train_iter = input_pipeline.DatasetIterator(make_dataset(train_dataset_cfg, converter))
    input_shapes = global_input_shapes(train_iter)
    setup = shard_model(model, optimizer, input_shapes, mesh, rules)
    batch_shardings = input_pipeline.batch_shardings(mesh, input_shapes)

    manager = checkpoints.create_manager(model_dir / "checkpoints")
    signature = run_config.signature(model, setup.state_shapes, optimizer_fn)
    if manager.latest_step() is not None:
      run_config.check_resume(model_dir, signature)
    state = checkpoints.restore(manager, setup.abstract_state(), data_iterator=train_iter)
    if state is None:
      state = setup.init_fn(jax.random.key(seed))
    start = int(jax.device_get(state.step))
    logging.info("Starting at step %d of %d (%s)", start, total_steps,
                 "resumed" if start else "fresh")
    run_config.record(model_dir, signature, start)

    # One compiled step per train phase, built when the phase is first reached.
    train_steps = {}
    evaluate = _make_evaluator(model, setup, eval_dataset_cfg, eval_steps)

    is_writer = jax.process_index() == 0
    writer = metric_writers.MultiWriter([
        metric_writers.create_default_writer(str(model_dir), just_logging=not is_writer),
        # A resume replays the steps after its checkpoint: their old lines go first.
        *([TextFileWriter(model_dir / "metrics.txt", resume_step=start)] if is_writer else [])])
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer,
                                               every_steps=log_every, every_secs=None)
    rng = jax.random.key(seed + 1)
    pending = []
    try:
      for step in range(start, total_steps):
        batch = input_pipeline.to_global_batch(next(train_iter), batch_shardings)
        phase = model.train_phase(step)
        if phase not in train_steps:
          train_steps[phase] = jit_train_step(model, setup, batch_shardings, num_microbatches,
                                              phase)
        state, metrics = train_steps[phase](state, batch, rng)
        pending.append(metrics)
        done = step + 1
        progress(done)
        if done % log_every == 0 or done == total_steps:
          _check_finite(state, manager)
          scalars = {f"train/{k}": v for k, v in _mean_metrics(pending).items()}
          if lr_schedule is not None:
            scalars["train/learning_rate"] = float(lr_schedule(step))
          writer.write_scalars(done, scalars)
          pending = []
        if evaluate and eval_every and (done % eval_every == 0 or done == total_steps):
          with progress.timed("eval"):
            writer.write_scalars(done, {f"eval/{k}": v for k, v in evaluate(state).items()})
        if done % checkpoint_every == 0 or done == total_steps:
          _check_finite(state, manager)
          checkpoints.save(manager, done, state, train_iter)
    finally:
      manager.wait_until_finished()
      writer.flush()
      writer.close()
    return state


def _make_evaluator(model, setup: ShardedSetup, cfg: Optional[DatasetConfig], eval_steps: int):
  """`state -> mean metrics` over the first `eval_steps` batches of a fixed eval split."""
  if cfg is None:
    return None
  step_fn = None

  def evaluate(state):
    nonlocal step_fn
    iterator = input_pipeline.DatasetIterator(
        make_dataset(cfg, model.FEATURE_CONVERTER_CLS, drop_remainder=True))
    shardings = input_pipeline.batch_shardings(setup.mesh, global_input_shapes(iterator))
    if step_fn is None:
      step_fn = jax.jit(model.eval_step, in_shardings=(setup.state_shardings, shardings),
                        out_shardings=partitioning.replicated(setup.mesh))
    results = []
    for _, local in zip(range(eval_steps), iterator):
      results.append(step_fn(state, input_pipeline.to_global_batch(local, shardings)))
    if not results:
      raise ValueError(f"eval split {cfg.split!r} of {cfg.mixture_or_task_name} yielded no "
                       f"full batch of {cfg.batch_size}")
    return _mean_metrics(results)

  return evaluate
