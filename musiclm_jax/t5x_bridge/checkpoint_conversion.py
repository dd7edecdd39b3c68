"""Stage checkpoints between t5x's layout and ours, both orbax.

t5x: `{model_dir}/checkpoint_<step>/state` holds `{target: params, state: {step,
param_states}}` (t5x's train-state dict). Ours: `{model_dir}/checkpoints/<step>/state`, a
TrainState. Parameters and the step convert exactly; the optimizer state does not carry
over: the converted checkpoint holds a fresh state of the destination's optimizer (zero Adam
moments), because the two trainers' optimizer configurations are not guaranteed to match.
"""
import os
import re
from typing import Optional

import flax
import gin
import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from t5x import checkpoints as t5x_checkpoints
from t5x import partitioning as t5x_partitioning
from t5x import train_state as t5x_train_state

from musiclm_jax.core import checkpoints
from musiclm_jax.core.train_state import TrainState
from musiclm_jax.t5x_bridge.model import StageModel, params_axes

_T5X_STEP_DIR = re.compile(r"^checkpoint_(\d+)$")


def t5x_checkpoint_dir(path: str, step: Optional[int] = None) -> str:
  """`path` itself if it is a `checkpoint_<step>` directory, else the newest (or `step`'s)
  checkpoint of the t5x model directory `path`."""
  path = os.path.abspath(path)
  if _T5X_STEP_DIR.match(os.path.basename(path)):
    if not os.path.isdir(os.path.join(path, "state")):
      raise FileNotFoundError(f"{path} is not a complete t5x checkpoint (no state/ in it)")
    return path
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no t5x model directory {path}")
  steps = sorted(int(m.group(1)) for m in map(_T5X_STEP_DIR.match, os.listdir(path))
                 if m and os.path.isdir(os.path.join(path, m.group(0), "state")))
  if not steps:
    raise FileNotFoundError(f"no complete t5x checkpoint_<step> directory in {path}")
  if step is not None and step not in steps:
    raise FileNotFoundError(f"no t5x checkpoint of step {step} in {path}; it has {steps}")
  return os.path.join(path, f"checkpoint_{steps[-1] if step is None else step}")


def read_t5x_params(path: str, step: Optional[int] = None) -> tuple[dict, int]:
  """The parameters (numpy) and step of a t5x checkpoint."""
  directory = os.path.join(t5x_checkpoint_dir(path, step), "state")
  handler = ocp.PyTreeCheckpointHandler(use_ocdbt=True)
  metadata = ocp.Checkpointer(handler).metadata(directory)
  tree = metadata.item_metadata.tree if hasattr(metadata, "item_metadata") else metadata
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  state = ocp.Checkpointer(handler).restore(
      directory, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  if "target" not in state:
    raise ValueError(f"{directory} is not a t5x train state (no 'target' parameters in it)")
  return state["target"], int(np.asarray(state["state"]["step"]))


def _check_like(params, abstract, what: str) -> None:
  """Raises naming the first parameter whose path, shape or dtype differs from the model's."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  want = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract), sep="/")
  if set(flat) != set(want):
    missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
    raise ValueError(f"{what} does not hold the model's parameters: missing {missing[:5]}, "
                     f"unexpected {extra[:5]} (is the model gin file the one it was trained with?)")
  for name, spec in want.items():
    if tuple(flat[name].shape) != tuple(spec.shape):
      raise ValueError(f"{what}: parameter {name} has shape {tuple(flat[name].shape)}, the model "
                       f"wants {tuple(spec.shape)}")


def _boxed_params(model: StageModel):
  """The model's parameters as ShapeDtypeStructs in their logical-axis boxes."""
  return jax.eval_shape(lambda rng: model.stage_model.get_initial_variables(
      rng, {"decoder_input_tokens": (1, 8)}), jax.random.key(0))["params"]


def t5x_to_ours(t5x_path: str, model_dir: str, model: StageModel, optimizer,
                step: Optional[int] = None) -> str:
  """Writes `{model_dir}/checkpoints/<step>` from a t5x checkpoint; returns its directory.
  `optimizer` (optax) gives the fresh optimizer state our TrainState carries."""
  params, t5x_step = read_t5x_params(t5x_path, step)
  _check_like(params, nn.meta.unbox(_boxed_params(model)), f"t5x checkpoint {t5x_path}")
  params = jax.tree.map(np.asarray, flax.core.unfreeze(params))
  state = TrainState.create(params, optimizer.init(params)).replace(
      step=np.asarray(t5x_step, np.int32))
  manager = checkpoints.create_manager(os.path.join(model_dir, "checkpoints"), enable_async=False)
  if t5x_step in manager.all_steps():
    raise FileExistsError(f"{model_dir} already has a checkpoint of step {t5x_step}; "
                          "convert into a new directory")
  checkpoints.save(manager, t5x_step, state, force=True)
  manager.wait_until_finished()
  manager.close()
  return os.path.join(model_dir, "checkpoints", str(t5x_step))


def ours_to_t5x(model_dir: str, t5x_model_dir: str, model: StageModel,
                step: Optional[int] = None) -> str:
  """Writes `{t5x_model_dir}/checkpoint_<step>` from our checkpoint (newest or `step`);
  returns its directory. The t5x optimizer state is `model.optimizer_def`'s initial one."""
  boxed = _boxed_params(model)
  abstract = nn.meta.unbox(boxed)
  on_one_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  params, our_step = checkpoints.restore_params(model_dir, checkpoints.abstract_with_shardings(
      abstract, jax.tree.map(lambda _: on_one_device, abstract)), step)
  params = jax.device_get(params)
  state = t5x_train_state.FlaxOptimTrainState.create(
      model.optimizer_def, flax.core.freeze({"params": params,
                                             "params_axes": params_axes(boxed)}))
  state = state.replace_step(np.asarray(our_step, np.int32))
  destination = epath.Path(t5x_model_dir) / f"checkpoint_{our_step}"
  if destination.exists():
    raise FileExistsError(f"{destination} exists; convert into a new t5x model directory")
  # t5x's manager writes beside a directory that does not exist yet, not into it.
  os.makedirs(t5x_model_dir, exist_ok=True)
  partitioner = t5x_partitioning.PjitPartitioner(num_partitions=1)
  manager = t5x_checkpoints.OrbaxCheckpointManagerInterface(
      t5x_model_dir, state, partitioner)
  manager.save(state)
  manager.wait_until_finished()
  return str(destination)


FORMATS = ("ours", "t5x")


@gin.configurable(module="convert")
def convert(*, model: StageModel, to_format: str, source: str, destination: str,
            step: Optional[int] = None) -> str:
  """The entry point of `python -m musiclm_jax.t5x_bridge.convert`."""
  if to_format not in FORMATS:
    raise ValueError(f"convert.to_format={to_format!r}; expected one of {FORMATS}")
  if to_format == "ours":
    return t5x_to_ours(source, destination, model, model.optimizer_def.optax_optimizer, step)
  return ours_to_t5x(source, destination, model, step)
