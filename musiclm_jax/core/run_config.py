"""What a model directory was trained with: `config.gin` (every gin binding of the run, as t5x
writes it) and `run_signature.json` (the model, its parameter and optimizer-state shapes, the
optimizer's bindings). A resumed run must match the signature, or it stops before touching
anything: restoring a checkpoint into another model or optimizer fails deep inside orbax, or
worse, succeeds and trains a silently different run."""
import json
from typing import Any, Callable, Optional

import gin
import jax
from etils import epath

CONFIG_GIN = "config.gin"
SIGNATURE_JSON = "run_signature.json"


class RunConfigMismatchError(ValueError):
  """The model directory holds a run of another model or optimizer."""


def _shapes(tree) -> dict[str, str]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): f"{tuple(leaf.shape)} {leaf.dtype}" for path, leaf in leaves}


def _optimizer_bindings(optimizer_fn: Callable) -> dict[str, str]:
  try:
    bindings = gin.get_bindings(optimizer_fn)
  except (ValueError, TypeError):  # not a gin configurable: its identity is all there is
    bindings = {}
  # The schedule may change on resume (t5x allows it); the update rule may not.
  return {k: repr(v) for k, v in sorted(bindings.items()) if k != "lr_schedule"}


def signature(model, state_shapes, optimizer_fn: Callable) -> dict[str, Any]:
  """The parts of a run a checkpoint cannot be carried across (JSON-able)."""
  module = getattr(model, "module", None)
  return {
      "model": type(model).__qualname__,
      "network": type(module).__qualname__ if module is not None else None,
      "params": _shapes(state_shapes.params),
      "model_state": _shapes(state_shapes.model_state),
      "optimizer": getattr(optimizer_fn, "__name__", type(optimizer_fn).__name__),
      "optimizer_bindings": _optimizer_bindings(optimizer_fn),
      "optimizer_state": _shapes(state_shapes.opt_state),
  }


def _describe(name: str, old, new) -> Optional[str]:
  if old == new:
    return None
  if not isinstance(old, dict) or not isinstance(new, dict):
    return f"{name}: {old!r} in the run, {new!r} now"
  changed = [k for k in old if k in new and old[k] != new[k]]
  gone = [k for k in old if k not in new]
  added = [k for k in new if k not in old]
  parts = []
  if changed:
    k = changed[0]
    parts.append(f"{len(changed)} differ (e.g. {k}: {old[k]} in the run, {new[k]} now)")
  if gone:
    parts.append(f"{len(gone)} only in the run (e.g. {gone[0]})")
  if added:
    parts.append(f"{len(added)} only now (e.g. {added[0]})")
  return f"{name}: " + "; ".join(parts)


def check_resume(model_dir: epath.Path, current: dict) -> None:
  """Raises RunConfigMismatchError if `model_dir`'s recorded run differs from `current`.
  A directory without a record (written before records existed) passes."""
  path = epath.Path(model_dir) / SIGNATURE_JSON
  if not path.exists():
    return
  recorded = json.loads(path.read_text())
  problems = [p for p in (_describe(k, recorded.get(k), current.get(k)) for k in current) if p]
  if problems:
    raise RunConfigMismatchError(
        f"{model_dir} holds a checkpoint of a different run, so it cannot resume: "
        + " | ".join(problems) + f". Its configuration is {epath.Path(model_dir) / CONFIG_GIN};"
        " train into a new MODEL_DIR, or bind the same model and optimizer.")


def _write(path: epath.Path, text: str) -> None:
  # Not core/files.py: a model directory may be on GCS (gs://), which os.replace cannot reach.
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_text(text)
  tmp.replace(path)


def record(model_dir: epath.Path, current: dict, start_step: int) -> None:
  """Writes config.gin and the signature (process 0 only). A resumed run whose bindings
  changed (e.g. a new learning rate) keeps the earlier config as config.before_step_N.gin."""
  if jax.process_index() != 0:
    return
  model_dir = epath.Path(model_dir)
  model_dir.mkdir(parents=True, exist_ok=True)
  config = gin.config_str()
  config_path = model_dir / CONFIG_GIN
  if config_path.exists() and config_path.read_text() != config:
    config_path.rename(model_dir / f"config.before_step_{start_step}.gin")
  _write(config_path, config)
  _write(model_dir / SIGNATURE_JSON, json.dumps(current, indent=1) + "\n")
