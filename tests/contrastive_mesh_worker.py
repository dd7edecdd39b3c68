"""Subprocess half of tests/mulan/test_contrastive.py: MuLan's contrastive step on 8 fake devices.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before jax is imported:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python -m tests.contrastive_mesh_worker OUT_DIR

For every mesh it builds the tiny MuLan's TrainState with `trainer.shard_model` and runs
NUM_STEPS jitted train steps exactly as `trainer.train` does, on one fixed batch sharded over
the batch axes; it also compiles `contrastive.info_nce` alone on sharded embeddings and
records whether the program all-gathers them. Writes OUT_DIR/<mesh>.npz; the assertions live
on the pytest side.
"""
import functools
import sys

import flax.linen as nn
import jax
import numpy as np
from etils import epath
from flax import traverse_util

from musiclm_jax.mulan import contrastive
from musiclm_jax.core import input_pipeline, optimizers, partitioning, trainer
from tests import mulan_helpers

MESHES = {"1dev": (1, 1, 1), "8x1x1": (8, 1, 1), "2x2x2": (2, 2, 2)}
NUM_STEPS = 2
BATCH, SAMPLES = 16, 8000
CAPTIONS = ["a calm piano melody", "loud drums and bass", "a soft string quartet",
            "fast electronic beat"]


def make_batch(model):
  rng = np.random.default_rng(0)
  wav = (rng.normal(size=(BATCH, SAMPLES)) * 0.1).astype(np.float32)
  wav += np.sin(np.arange(SAMPLES) * rng.uniform(0.01, 0.3, (BATCH, 1))).astype(np.float32)
  captions = [f"{CAPTIONS[i % len(CAPTIONS)]} number {i}" for i in range(BATCH)]
  return {"audio": wav, "text_tokens": model.tokenizer.tokenize(captions)}


def run(name, shape, model, batch, initial=None):
  """Returns (results, the initial state on the host): compiling init dominates on CPU, so
  later meshes place the first mesh's initial state instead of initialising again."""
  devices = jax.devices()[:1] if name == "1dev" else None
  mesh = partitioning.create_mesh(shape, devices=devices)
  rules = partitioning.logical_axis_rules()
  optimizer = model.make_optimizer(functools.partial(optimizers.create, clip_norm=1.0),
                                   optimizers.schedule(1e-3, 0, "constant", total_steps=10))
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  out = {}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    setup = trainer.shard_model(model, optimizer, shapes, mesh, rules)
    batch_shardings = input_pipeline.batch_shardings(mesh, shapes)
    if initial is None:
      initial = jax.device_get(setup.init_fn(jax.random.key(0)))
    state = jax.device_put(initial, setup.state_shardings)
    step = jax.jit(functools.partial(model.train_step, optimizer=optimizer),
                   in_shardings=(setup.state_shardings, batch_shardings,
                                 partitioning.replicated(mesh)),
                   out_shardings=(setup.state_shardings, partitioning.replicated(mesh)))
    global_batch = input_pipeline.to_global_batch(batch, batch_shardings)
    for i in range(NUM_STEPS):
      state, metrics = step(state, global_batch, jax.random.key(1))
      for key, value in metrics.items():
        out.setdefault(key, []).append(float(value))
    flat = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
    out.update({f"param/{k}": np.asarray(v) for k, v in flat.items()})
    out["num_sharded_params"] = sum(not x.sharding.is_fully_replicated
                                    for x in jax.tree.leaves(state.params))

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(2, BATCH, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    sharding = input_pipeline.batch_shardings(mesh, {"e": emb[0]})["e"]
    loss_fn = jax.jit(lambda a, t: contrastive.info_nce(a, t, np.log(10.0).astype(np.float32))[0],
                      in_shardings=(sharding, sharding))
    a, t = (jax.device_put(x, sharding) for x in emb)
    out["embedding_loss"] = float(loss_fn(a, t))
    out["embeddings"] = emb
    out["all_gathers"] = loss_fn.lower(a, t).compile().as_text().count("all-gather")
  return {k: np.asarray(v) for k, v in out.items()}, initial


def main(argv):
  out_dir = epath.Path(argv[1])
  out_dir.mkdir(parents=True, exist_ok=True)
  if jax.device_count() != 8:
    raise SystemExit(f"expected 8 devices, got {jax.devices()}")
  model = mulan_helpers.tiny_model()
  batch = make_batch(model)
  initial = None
  for name, shape in MESHES.items():
    results, initial = run(name, shape, model, batch, initial)
    np.savez(out_dir / f"{name}.npz", **results)
  print("done")


if __name__ == "__main__":
  main(sys.argv)
