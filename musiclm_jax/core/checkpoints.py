"""Orbax checkpoints of a TrainState (+ the data-iterator position), sharded and async.

Each step directory is written to a temporary name and renamed when complete, so a run
killed mid-save leaves the previous steps intact and restarts from the newest complete one.
Restoring takes the *target* shardings, so a checkpoint saved on one mesh loads onto another.
"""
from typing import Any, Optional

import gin
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from musiclm_jax.core.checkpoint_iterator import DatasetIteratorRestore, DatasetIteratorSave


@gin.configurable(module="checkpoints")
def create_manager(directory, max_to_keep: int = 3, enable_async: bool = True,
                   save_interval_steps: int = 1) -> ocp.CheckpointManager:
  """`{model_dir}/checkpoints/<step>/{state,dataset}`."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=enable_async,
      save_interval_steps=save_interval_steps, create=True)
  return ocp.CheckpointManager(epath.Path(directory).absolute(), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator=None,
         force: bool = False) -> bool:
  items = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items["dataset"] = DatasetIteratorSave(data_iterator)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def abstract_with_shardings(shapes, shardings):
  """ShapeDtypeStructs carrying the shardings restore should produce."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


def restore(manager: ocp.CheckpointManager, abstract_state, step: Optional[int] = None,
            data_iterator=None) -> Optional[Any]:
  """The state at `step` (default: newest complete step) laid out as `abstract_state`
  (ShapeDtypeStructs with shardings), or None if there is no checkpoint. Restores the data
  iterator's position in place when given."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    if "dataset" not in manager.item_metadata(step):
      raise FileNotFoundError(
          f"checkpoint step {step} in {manager.directory} has no data-iterator state; it cannot "
          "resume the input pipeline exactly")
    items["dataset"] = DatasetIteratorRestore(data_iterator)
  logging.info("Restoring checkpoint step %d from %s", step, manager.directory)
  return manager.restore(step, args=ocp.args.Composite(**items))["state"]


def restore_params(model_dir, abstract_params, step: Optional[int] = None):
  """Only the parameters of a training checkpoint (newest step by default), laid out as
  `abstract_params` (ShapeDtypeStructs with shardings): inference needs neither the optimizer
  state nor the optimizer's configuration."""
  manager = ocp.CheckpointManager(epath.Path(model_dir).absolute() / "checkpoints",
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {epath.Path(model_dir) / 'checkpoints'}")
  restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item={"params": abstract_params}, restore_args={"params": restore_args},
      partial_restore=True)))
  logging.info("Restored parameters of step %d from %s", step, model_dir)
  return restored["state"]["params"], step
