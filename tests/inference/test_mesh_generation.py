"""Text -> audio sharded over 8 CPU devices generates what one device generates.

The generation runs in tests/inference/mesh_generation_worker.py: the device count is fixed
when jax is imported, so it needs its own interpreter (all meshes share it, as compiling
dominates the cost).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.inference import mesh_generation_worker as worker
from tests.train_runner import REPO

pytestmark = pytest.mark.slow  # ~45 s: random checkpoints of six parts, three meshes


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp("mesh_generation")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-m", "tests.inference.mesh_generation_worker",
                           str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return {name: dict(np.load(out / f"{name}.npz")) for name in worker.MESHES}


@pytest.mark.parametrize("mesh", ["8x1x1", "2x2x2"])
def test_a_sharded_mesh_generates_the_tokens_and_audio_of_one_device(results, mesh):
  reference, sharded = results["1dev"], results[mesh]
  assert tuple(sharded["mesh"]) == {"8x1x1": (8, 1, 1), "2x2x2": (2, 2, 2)}[mesh]
  # Three prompts, padded to 8 (or 4) rows for the batch devices; the padding rows are gone.
  assert int(sharded["batch_multiple"]) == {"8x1x1": 8, "2x2x2": 4}[mesh]
  assert sharded["semantic"].shape == reference["semantic"].shape == (len(worker.TEXTS), 30)
  np.testing.assert_array_equal(sharded["semantic"], reference["semantic"])
  np.testing.assert_array_equal(sharded["acoustic"], reference["acoustic"])
  np.testing.assert_allclose(sharded["wav"], reference["wav"], rtol=1e-5, atol=1e-5)


def test_parameters_and_kv_cache_shard_as_the_logical_rules_say(results):
  # Pure data parallelism keeps whole parameters on every device; only the batch is split.
  assert int(results["8x1x1"]["num_sharded_params"]) == 0
  assert str(results["8x1x1"]["cache_spec"]) == "P('data',)"
  # embed over fsdp, heads / mlp / vocab over model: a quarter of the bytes per device or
  # less (a few small vectors stay whole).
  two = results["2x2x2"]
  assert int(two["num_sharded_params"]) > 0
  assert int(two["param_bytes_per_device"]) < 0.3 * int(results["1dev"]["param_bytes_per_device"])
  # The cached keys [batch, heads, kv, length]: batch over data x fsdp, heads over model.
  assert str(two["cache_spec"]) == "P(('data', 'fsdp'), 'model')"
