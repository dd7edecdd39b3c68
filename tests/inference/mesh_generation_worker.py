"""Subprocess half of tests/inference/test_mesh_generation.py: text -> audio on 8 fake devices.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before jax is imported:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
      python -m tests.inference.mesh_generation_worker OUT_DIR

Writes random checkpoints of the parts pipeline/tiny.gin configures, then for every mesh
loads them with `pipeline.load` (the mesh bound as `pipeline.load.mesh_shape`, as a run binds
it) and generates the same prompts with the same seed. Writes OUT_DIR/<mesh>.npz; the
assertions live on the pytest side.
"""
import sys

import flax.linen as nn
import gin
import jax
import numpy as np
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from musiclm_jax.core import gin_utils, partitioning
from musiclm_jax.inference import pipeline
from tests import pipeline_helpers

# name -> pipeline.load.mesh_shape; None keeps its default, all 8 devices over data.
MESHES = {"1dev": (1, 1, 1), "8x1x1": None, "2x2x2": (2, 2, 2)}
# Three prompts: a batch neither 8 nor the 2x2x2 mesh's 4 batch devices divide.
TEXTS = ["a calm piano melody", "loud drums and bass", "soft strings"]
SECONDS = 1.2  # two semantic, three coarse and three fine windows of pipeline_helpers.CROPS
SEED = 3


def _bindings(parts_dir, shape):
  dirs = [f"{name}_DIR = '{parts_dir / name.lower()}'"
          for name in ("SOUNDSTREAM", "MULAN", "SEMANTIC", "COARSE", "FINE")]
  mesh = [] if shape is None else [f"pipeline.load.mesh_shape = {shape}"]
  return [*dirs, *mesh, f"pipeline.load.crop_seconds = {pipeline_helpers.CROPS}",
          f"pipeline.load.context_seconds = {pipeline_helpers.CONTEXTS}"]


def _parse(parts_dir, shape):
  gin.clear_config()
  gin_utils.parse_gin(["pipeline/tiny.gin"], _bindings(parts_dir, shape))


def cache_spec(sampler) -> str:
  """The sharding GSPMD gives the first layer's cached keys `[batch, heads, kv, length]` when
  the sampler's parameters and a batch of 8 prompts prefill the KV cache."""
  tokens = jax.device_put(np.ones((8, 16), np.int32),
                          NamedSharding(sampler.mesh, PartitionSpec(partitioning.BATCH_AXES)))
  with jax.set_mesh(sampler.mesh), nn.logical_axis_rules(sampler.rules):
    cache, _ = jax.jit(sampler.model.prefill_cache)(sampler.params, tokens, tokens)
  keys = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cache)
          if "cached_key" in jax.tree_util.keystr(path)]
  return str(keys[0].sharding.spec)


def run(parts_dir, shape) -> dict:
  _parse(parts_dir, shape)
  music_lm = pipeline.load()
  out = music_lm.generate(TEXTS, seconds=SECONDS, seed=SEED)
  sampler = music_lm.samplers["coarse"]
  params = jax.tree.leaves(sampler.params)
  return {"semantic": out.semantic, "acoustic": out.acoustic, "wav": out.wav,
          "mesh": np.asarray(tuple(sampler.mesh.shape.values())),
          "batch_multiple": sampler.batch_multiple,
          "cache_spec": cache_spec(sampler),
          "num_sharded_params": sum(not x.sharding.is_fully_replicated for x in params),
          "param_bytes_per_device": partitioning.bytes_per_device(params)}


def main(argv):
  out_dir = epath.Path(argv[1])
  out_dir.mkdir(parents=True, exist_ok=True)
  if jax.device_count() != 8:
    raise SystemExit(f"expected 8 devices, got {jax.devices()}")
  parts_dir = out_dir / "parts"
  _parse(parts_dir, (1, 1, 1))
  pipeline_helpers.write_parts(pipeline.Parts())
  for name, shape in MESHES.items():
    np.savez(out_dir / f"{name}.npz", **run(parts_dir, shape))
  print("done")


if __name__ == "__main__":
  main(sys.argv)
