"""Subprocess half of tests/core/test_partitioning.py: one tiny model on several meshes.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before jax is imported, so
pytest runs this module in a fresh interpreter (all meshes in one process: compiling
dominates the cost):

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python -m tests.mesh_worker OUT_DIR

For every mesh `(data, fsdp, model)` it builds the TrainState with `trainer.shard_model`,
runs NUM_STEPS jitted train steps exactly as `trainer.train` does and records losses,
parameters and bytes per device. It then saves the 2x2x2 state with
`musiclm_jax.core.checkpoints`, restores it onto other meshes and takes one more step there.
Writes OUT_DIR/results.json (also printed) and OUT_DIR/<mesh>_{init,final}.npz; the
assertions live on the pytest side.
"""
import functools
import json
import os
import sys
import traceback

import flax.linen as nn
import jax
import numpy as np
import optax
from etils import epath
from flax import traverse_util

from musiclm_jax.core import checkpoints, input_pipeline, optimizers, partitioning, trainer
from tests.helpers import tiny_decoder_model

NUM_DEVICES = 8
NUM_STEPS = 4
BATCH, LENGTH, PREFIX, VOCAB = 8, 16, 5, 64
# name -> mesh shape; "1dev" is the reference and uses a single device.
MESHES = {
    "1dev": (1, 1, 1),
    "8x1x1": (8, 1, 1),
    "1x8x1": (1, 8, 1),
    "2x2x2": (2, 2, 2),
    "1x2x4": (1, 2, 4),
}
SAVE_FROM = "2x2x2"
RESTORE_ONTO = ("1x8x1", "8x1x1", "1dev")
BAD_SHAPES = ((3, 1, 1), (-1, 3, 1), (2, 2, 4), (16, 1, 1), (2, 4), (0, 8, 1), (-1, -1, 8))
GOOD_SHAPES = ((-1, 1, 1), (-1, 2, 2), (1, -1, 4))


def make_model():
  # Every sharded dimension (vocab, embed, heads, mlp) is divisible by 8.
  return tiny_decoder_model(vocab_size=VOCAB, emb_dim=32, num_heads=8, head_dim=8, mlp_dim=64,
                            num_layers=2, dropout_rate=0.0)


def make_batches(num_batches):
  """PrefixLM-shaped batches: a bidirectional prompt, then targets with per-row padding."""
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(num_batches):
    targets = rng.integers(2, VOCAB, size=(BATCH, LENGTH)).astype(np.int32)
    lengths = rng.integers(PREFIX + 2, LENGTH + 1, size=BATCH)
    positions = np.arange(LENGTH)[None, :]
    targets = np.where(positions < lengths[:, None], targets, 0).astype(np.int32)
    inputs = np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]], axis=1)
    causal = np.broadcast_to(positions <= PREFIX, (BATCH, LENGTH)).astype(np.int32)
    weights = ((targets > 0) & (positions > PREFIX)).astype(np.int32)
    batches.append({"decoder_input_tokens": inputs, "decoder_target_tokens": targets,
                    "decoder_loss_weights": weights, "decoder_causal_attention": causal})
  return batches


def spec_to_json(spec):
  """PartitionSpec -> list (tuples of mesh axes as lists), trailing Nones dropped."""
  entries = [list(e) if isinstance(e, tuple) else e for e in spec]
  while entries and entries[-1] is None:
    entries.pop()
  return entries


def flat_numpy(tree):
  return {name: np.asarray(jax.device_get(value))
          for name, value in traverse_util.flatten_dict(tree, sep="/").items()}


def leaf_specs(tree):
  return {jax.tree_util.keystr(path): spec_to_json(leaf.sharding.spec)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def shardings_match(tree, shardings):
  """Whether every array of `tree` is laid out as the corresponding expected sharding."""
  return all(a.sharding.is_equivalent_to(s, a.ndim)
             for a, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)))


class MeshRun:
  """Setup, compiled train step and results of the model on one mesh."""

  def __init__(self, name, shape, model, optimizer, batches):
    devices = jax.devices()[:1] if name == "1dev" else None
    self.mesh = partitioning.create_mesh(shape, devices=devices)
    self.rules = partitioning.logical_axis_rules()
    input_shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batches[0].items()}
    with self.context():
      self.setup = trainer.shard_model(model, optimizer, input_shapes, self.mesh, self.rules)
      self.batch_shardings = input_pipeline.batch_shardings(self.mesh, input_shapes)
      replicated = partitioning.replicated(self.mesh)
      # Exactly trainer.train's step.
      self.train_step = jax.jit(
          functools.partial(model.train_step, optimizer=optimizer, num_microbatches=1),
          in_shardings=(self.setup.state_shardings, self.batch_shardings, replicated),
          out_shardings=(self.setup.state_shardings, replicated),
          donate_argnums=(0,))

  def context(self):
    return _Both(jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules))

  def step(self, state, batch):
    with self.context():
      global_batch = input_pipeline.to_global_batch(batch, self.batch_shardings)
      return self.train_step(state, global_batch, jax.random.key(1))


class _Both:
  """Enters two context managers."""

  def __init__(self, first, second):
    self._first, self._second = first, second

  def __enter__(self):
    self._first.__enter__()
    self._second.__enter__()

  def __exit__(self, *exc):
    self._second.__exit__(*exc)
    self._first.__exit__(*exc)


def run_meshes(out_dir, model, optimizer, batches):
  results, runs, final_states = {}, {}, {}
  for name, shape in MESHES.items():
    run = MeshRun(name, shape, model, optimizer, batches)
    with run.context():
      state = run.setup.init_fn(jax.random.key(0))
    np.savez(out_dir / f"{name}_init.npz", **flat_numpy(state.params))
    init_specs = leaf_specs(state)
    init_matches = shardings_match(state, run.setup.state_shardings)
    losses, grad_norms = [], []
    for batch in batches[:NUM_STEPS]:
      state, metrics = run.step(state, batch)
      losses.append(float(metrics["loss"]))
      grad_norms.append(float(metrics["grad_norm"]))
    np.savez(out_dir / f"{name}_final.npz", **flat_numpy(state.params))
    results[name] = {
        "mesh_shape": list(shape),
        "mesh_axes": dict(run.mesh.shape),
        "num_devices": int(run.mesh.devices.size),
        "losses": losses,
        "grad_norms": grad_norms,
        "step": int(jax.device_get(state.step)),
        "param_bytes_per_device": partitioning.bytes_per_device(state.params),
        "opt_state_bytes_per_device": partitioning.bytes_per_device(state.opt_state),
        "param_bytes_total": int(sum(x.nbytes for x in jax.tree.leaves(state.params))),
        "init_state_specs": init_specs,
        "init_matches_setup": init_matches,
        "final_state_specs": leaf_specs(state),
        "final_matches_setup": shardings_match(state, run.setup.state_shardings),
        "setup_state_specs": {
            jax.tree_util.keystr(p): spec_to_json(s.spec)
            for p, s in jax.tree_util.tree_leaves_with_path(run.setup.state_shardings)},
    }
    runs[name], final_states[name] = run, state
  return results, runs, final_states


def restore_elsewhere(out_dir, runs, final_states, batches):
  """Saves SAVE_FROM's state, restores it onto other meshes and takes one more step."""
  source = final_states[SAVE_FROM]
  saved = [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(source)]
  manager = checkpoints.create_manager(epath.Path(out_dir) / "checkpoints")
  checkpoints.save(manager, NUM_STEPS, source)
  manager.wait_until_finished()
  next_batch = batches[NUM_STEPS]
  _, metrics = runs[SAVE_FROM].step(source, next_batch)
  report = {"saved_from": SAVE_FROM, "next_loss_on_source": float(metrics["loss"]),
            "targets": {}}
  for name in RESTORE_ONTO:
    try:
      report["targets"][name] = restore_onto(runs[name], manager, source, saved, next_batch)
    except Exception:  # pylint: disable=broad-except
      # Only the restore tests should fail, with the traceback, not the whole module.
      report["targets"][name] = {"error": traceback.format_exc()}
  manager.close()
  return report


def restore_onto(run, manager, source, saved, next_batch):
  """Restores the newest checkpoint laid out for `run`'s mesh and steps once from it."""
  with run.context():
    restored = checkpoints.restore(manager, run.setup.abstract_state())
  leaves = jax.tree.leaves(restored)
  same_structure = (jax.tree.structure(restored) == jax.tree.structure(source))
  max_abs_diff = max(float(np.max(np.abs(np.asarray(jax.device_get(a), np.float64) - b)))
                     if a.size else 0.0 for a, b in zip(leaves, saved))
  exact = len(leaves) == len(saved) and all(
      np.array_equal(np.asarray(jax.device_get(a)), b) and a.dtype == b.dtype
      for a, b in zip(leaves, saved))
  entry = {
      "type": type(restored).__name__,
      "same_structure": bool(same_structure),
      "exact": bool(exact),
      "max_abs_diff": max_abs_diff,
      "matches_target_shardings": shardings_match(restored, run.setup.state_shardings),
      "devices_per_leaf": sorted({len(a.sharding.device_set) for a in leaves}),
      "specs": leaf_specs(restored),
      "param_bytes_per_device": partitioning.bytes_per_device(restored.params),
      "step": int(jax.device_get(restored.step)),
  }
  _, metrics = run.step(restored, next_batch)
  entry["next_loss"] = float(metrics["loss"])
  return entry


def mesh_errors():
  errors = {}
  for shape in BAD_SHAPES:
    try:
      mesh = partitioning.create_mesh(shape)
      errors[str(shape)] = {"raised": None, "mesh": dict(mesh.shape)}
    except Exception as e:  # pylint: disable=broad-except
      errors[str(shape)] = {"raised": type(e).__name__,
                            "is_mesh_error": isinstance(e, partitioning.MeshError),
                            "is_value_error": isinstance(e, ValueError), "message": str(e)}
  good = {str(shape): dict(partitioning.create_mesh(shape).shape) for shape in GOOD_SHAPES}
  good["default"] = dict(partitioning.create_mesh().shape)
  return {"bad": errors, "good": good}


def main(argv):
  if len(argv) != 2:
    raise SystemExit(f"usage: {argv[0]} OUT_DIR")
  out_dir = epath.Path(argv[1])
  out_dir.mkdir(parents=True, exist_ok=True)
  if jax.device_count() != NUM_DEVICES:
    raise SystemExit(f"expected {NUM_DEVICES} devices (XLA_FLAGS="
                     f"{os.environ.get('XLA_FLAGS')!r}), got {jax.devices()}")
  model = make_model()
  optimizer = optimizers.create(optax.constant_schedule(1e-2))
  batches = make_batches(NUM_STEPS + 1)
  results, runs, final_states = run_meshes(out_dir, model, optimizer, batches)
  output = {
      "device_count": jax.device_count(),
      "num_steps": NUM_STEPS,
      "meshes": results,
      "restore": restore_elsewhere(out_dir, runs, final_states, batches),
      "create_mesh": mesh_errors(),
  }
  text = json.dumps(output, indent=1, sort_keys=True)
  (out_dir / "results.json").write_text(text)
  print(text)


if __name__ == "__main__":
  main(sys.argv)
