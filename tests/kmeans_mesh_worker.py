"""Subprocess half of tests/semantic/test_kmeans.py: k-means and w2v-BERT features on 8 fake devices.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before jax is imported:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python -m tests.kmeans_mesh_worker OUT_DIR

For every mesh it seeds and steps `MiniBatchKMeans` on the same points, accumulates
`FeatureStatistics` from sharded batches, and runs the tiny w2v-BERT's layer features with
parameters sharded by their logical axes. Writes OUT_DIR/<mesh>.npz; the assertions live on
the pytest side.
"""
import sys

import flax.linen as nn
import jax
import numpy as np
from etils import epath

from musiclm_jax.semantic import kmeans
from musiclm_jax.core import partitioning
from musiclm_jax.semantic.semantic_tokenizer import param_shardings
from tests.w2v_bert_helpers import tiny_model

MESHES = {"1dev": (1, 1, 1), "8x1x1": (8, 1, 1), "2x2x2": (2, 2, 2)}
NUM_CLUSTERS, DIM, POINTS, STEPS = 8, 4, 256, 5


def blobs():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(NUM_CLUSTERS, DIM)) * 8
  labels = rng.integers(0, NUM_CLUSTERS, (STEPS + 1, POINTS))
  return (centres[labels] + rng.normal(size=labels.shape + (DIM,))).astype(np.float32)


def run(name, shape, batches, wav):
  devices = jax.devices()[:1] if name == "1dev" else None
  mesh = partitioning.create_mesh(shape, devices=devices)
  rules = partitioning.logical_axis_rules()
  clusterer = kmeans.MiniBatchKMeans(NUM_CLUSTERS, mesh)
  centroids, counts = clusterer.init(jax.random.key(0), batches[0])
  seeded = np.asarray(centroids)
  statistics = kmeans.FeatureStatistics()
  for batch in batches[1:]:
    statistics.update(clusterer.place(batch))
    centroids, counts, _ = clusterer.step(centroids, counts, batch)
  ids, _ = clusterer.assign(centroids, batches[0])

  model = tiny_model()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    _, shardings = param_shardings(model, mesh, rules)
    params = jax.jit(lambda rng: nn.meta.unbox(model.get_initial_variables(
        rng, {"audio": wav.shape})["params"]), out_shardings=shardings)(jax.random.key(0))
    features = jax.jit(lambda p, w: model.features(p, w, 1))(params, wav)
  return {"seeded": seeded, "centroids": np.asarray(centroids), "counts": np.asarray(counts),
          "ids": np.asarray(ids), "mean": statistics.mean, "std": statistics.std,
          "features": np.asarray(features),
          "num_sharded_params": sum(not x.sharding.is_fully_replicated
                                    for x in jax.tree.leaves(params)),
          "points_sharded": not clusterer.place(batches[0]).sharding.is_fully_replicated}


def main(argv):
  out_dir = epath.Path(argv[1])
  out_dir.mkdir(parents=True, exist_ok=True)
  if jax.device_count() != 8:
    raise SystemExit(f"expected 8 devices, got {jax.devices()}")
  batches = blobs()
  wav = np.random.default_rng(1).normal(size=(8, 3200)).astype(np.float32) * 0.1
  for name, shape in MESHES.items():
    np.savez(out_dir / f"{name}.npz", **run(name, shape, batches, wav))
  print("done")


if __name__ == "__main__":
  main(sys.argv)
