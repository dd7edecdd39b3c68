"""Tests for musiclm_jax.core.partitioning: the same train step on every mesh of 8 CPU devices.

The 8-device part runs `tests/mesh_worker.py` once in a subprocess (XLA_FLAGS must be set
before jax is imported) and asserts on the JSON / npz files it writes:
  * meshes 8x1x1, 1x8x1, 2x2x2, 1x2x4 (data, fsdp, model) reproduce the single-device
    losses, gradient norms and parameters over NUM_STEPS adamw steps;
  * per-device parameter bytes shrink as fsdp / model grow;
  * optimizer moments are sharded like their parameters, counters are replicated;
  * an orbax checkpoint saved on one mesh restores exactly onto another, with the new
    mesh's shardings, and training continues there with the same loss.
`create_mesh` errors are also checked in this (single-device) process.
"""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from musiclm_jax.core import partitioning

REPO = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = "1dev"
SHARDED_MESHES = ("8x1x1", "1x8x1", "2x2x2", "1x2x4")
WORKER_TIMEOUT_S = 300

# Losses and gradient norms differ between meshes only by the order of float32 reductions.
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
# Adam's first steps move every parameter by ~lr * sign(grad) whatever the gradient's size,
# so an element whose gradient nearly cancels (|g| ~ reduction noise) can differ by a few
# percent of lr (1e-2) between meshes. Typical elements agree to ~1e-6 and move by ~2e-2.
PARAM_ATOL = 1e-3           # any element: < 10% of one step of lr
PARAM_TIGHT_ATOL = 2e-5     # ... and nearly all elements much closer than that
PARAM_TIGHT_FRACTION = 0.995


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
  """Runs tests.mesh_worker on 8 fake CPU devices; returns (results dict, output dir)."""
  out_dir = tmp_path_factory.mktemp("mesh_worker")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-m", "tests.mesh_worker", str(out_dir)], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
  assert result.returncode == 0, (
      f"mesh worker failed ({result.returncode}):\n{result.stderr[-5000:]}")
  results = json.loads((out_dir / "results.json").read_text())
  assert results["device_count"] == 8
  return results, out_dir


def _load(out_dir, name, which):
  with np.load(out_dir / f"{name}_{which}.npz") as data:
    return {k: data[k] for k in data.files}


def _param_key(flat_name):
  """'layers_0/mlp/wi_0/kernel' -> ".params['layers_0']['mlp']['wi_0']['kernel']"."""
  return ".params" + "".join(f"['{part}']" for part in flat_name.split("/"))


# --- create_mesh ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,needle", [
    ((2, 1, 1), "needs 2 devices, but 1 are available"),
    ((1, 1, 4), "needs 4 devices, but 1 are available"),
    ((-1, 2, 1), "cannot divide 1 devices"),
])
def test_create_mesh_rejects_shapes_that_do_not_fit_the_devices(shape, needle):
  assert jax.device_count() == 1
  with pytest.raises(partitioning.MeshError) as e:
    partitioning.create_mesh(shape)
  assert isinstance(e.value, ValueError)
  assert f"mesh_shape {shape}" in str(e.value)
  assert needle in str(e.value)


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 1, 1), (0, 1, 1), (-1, -1, 1), (1, -2, 1)])
def test_create_mesh_rejects_malformed_shapes(shape):
  with pytest.raises(partitioning.MeshError) as e:
    partitioning.create_mesh(shape)
  assert f"mesh_shape {shape}" in str(e.value)


def test_create_mesh_fills_in_minus_one():
  mesh = partitioning.create_mesh((1, -1, 1))
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "model": 1}
  assert mesh.axis_names == partitioning.MESH_AXES


def test_create_mesh_errors_on_eight_devices(worker):
  results, _ = worker
  bad = results["create_mesh"]["bad"]
  for shape in ("(3, 1, 1)", "(-1, 3, 1)", "(2, 2, 4)", "(16, 1, 1)"):
    assert bad[shape]["is_mesh_error"], bad[shape]
    message = bad[shape]["message"]
    assert f"mesh_shape {shape}" in message
    assert "8 devices" in message or "8 are available" in message, message
  for shape in ("(2, 4)", "(0, 8, 1)", "(-1, -1, 8)"):
    assert bad[shape]["is_mesh_error"], bad[shape]
    assert f"mesh_shape {shape}" in bad[shape]["message"]
  good = results["create_mesh"]["good"]
  assert good["default"] == {"data": 8, "fsdp": 1, "model": 1}
  assert good["(-1, 2, 2)"] == {"data": 2, "fsdp": 2, "model": 2}
  assert good["(1, -1, 4)"] == {"data": 1, "fsdp": 2, "model": 4}


# --- same numbers on every mesh ---------------------------------------------------------------

def test_reference_runs_on_one_device(worker):
  results, _ = worker
  reference = results["meshes"][REFERENCE]
  assert reference["num_devices"] == 1
  assert reference["step"] == results["num_steps"] == len(reference["losses"])
  assert all(np.isfinite(reference["losses"]))
  # The run is not trivially constant: the optimizer really changed the loss.
  assert len(set(reference["losses"])) == len(reference["losses"])


@pytest.mark.parametrize("name", SHARDED_MESHES)
def test_mesh_reproduces_one_device_losses(worker, name):
  results, _ = worker
  run, reference = results["meshes"][name], results["meshes"][REFERENCE]
  assert run["num_devices"] == 8
  assert run["mesh_axes"] == dict(zip(partitioning.MESH_AXES, run["mesh_shape"]))
  assert run["step"] == reference["step"]
  np.testing.assert_allclose(run["losses"], reference["losses"], rtol=LOSS_RTOL, atol=LOSS_ATOL)
  np.testing.assert_allclose(run["grad_norms"], reference["grad_norms"], rtol=LOSS_RTOL,
                             atol=LOSS_ATOL)


@pytest.mark.parametrize("name", SHARDED_MESHES)
def test_mesh_reproduces_one_device_params(worker, name):
  _, out_dir = worker
  # Threefry is partitionable, so sharded initialisation draws the very same numbers.
  init, ref_init = _load(out_dir, name, "init"), _load(out_dir, REFERENCE, "init")
  assert init.keys() == ref_init.keys()
  for key in ref_init:
    np.testing.assert_array_equal(init[key], ref_init[key], err_msg=key)
  final, ref_final = _load(out_dir, name, "final"), _load(out_dir, REFERENCE, "final")
  assert final.keys() == ref_final.keys()
  diffs = np.concatenate([np.abs(final[k] - ref_final[k]).ravel() for k in ref_final])
  moved = np.concatenate([np.abs(ref_final[k] - ref_init[k]).ravel() for k in ref_final])
  assert np.median(moved) > 100 * PARAM_TIGHT_ATOL, "parameters barely trained"
  for key in ref_final:
    np.testing.assert_allclose(final[key], ref_final[key], rtol=0, atol=PARAM_ATOL, err_msg=key)
  close = np.mean(diffs <= PARAM_TIGHT_ATOL)
  assert close >= PARAM_TIGHT_FRACTION, (
      f"only {close:.4f} of parameters within {PARAM_TIGHT_ATOL}; max diff {diffs.max()}")


@pytest.mark.parametrize("name", (REFERENCE,) + SHARDED_MESHES)
def test_state_is_laid_out_as_shard_model_says(worker, name):
  run = worker[0]["meshes"][name]
  assert run["init_matches_setup"]
  assert run["final_matches_setup"]
  assert run["final_state_specs"] == run["setup_state_specs"]


# --- memory -----------------------------------------------------------------------------------

def test_param_bytes_per_device_shrink_as_fsdp_and_model_grow(worker):
  results, out_dir = worker
  meshes = results["meshes"]
  per_device = {name: meshes[name]["param_bytes_per_device"] for name in meshes}
  total = meshes[REFERENCE]["param_bytes_total"]
  assert per_device[REFERENCE] == total
  assert all(meshes[name]["param_bytes_total"] == total for name in meshes)
  # Pure data parallelism replicates; fsdp x model = 4 cuts ~4x; 8 cuts ~8x.
  assert per_device["8x1x1"] == total
  assert per_device["2x2x2"] < per_device["8x1x1"]
  assert per_device["1x8x1"] < per_device["2x2x2"]
  assert per_device["1x2x4"] < per_device["2x2x2"]
  assert per_device["2x2x2"] <= total / 4 * 1.05
  assert per_device["1x8x1"] <= total / 8 * 1.1
  assert per_device["1x2x4"] <= total / 8 * 1.1
  # Exactly what the specs imply (every sharded dimension divides evenly).
  shapes = _load(out_dir, REFERENCE, "final")
  for name, run in meshes.items():
    expected = 0
    for key, value in shapes.items():
      spec = run["setup_state_specs"][_param_key(key)]
      axes = [a for entry in spec if entry is not None
              for a in (entry if isinstance(entry, list) else [entry])]
      expected += value.nbytes // int(np.prod([run["mesh_axes"][a] for a in axes]))
    assert run["param_bytes_per_device"] == expected, name
  # Adam's moments follow: optimizer state shrinks the same way.
  opt = {name: meshes[name]["opt_state_bytes_per_device"] for name in meshes}
  assert opt["8x1x1"] == opt[REFERENCE]
  assert opt["1x8x1"] < opt["2x2x2"] < opt["8x1x1"]
  assert opt["1x2x4"] < opt["2x2x2"]


# --- optimizer state shardings ----------------------------------------------------------------

def test_optimizer_moments_are_sharded_like_their_params(worker):
  run = worker[0]["meshes"]["1x2x4"]
  for specs in (run["setup_state_specs"], run["init_state_specs"], run["final_state_specs"]):
    params = {k[len(".params"):]: v for k, v in specs.items() if k.startswith(".params")}
    kernel = "['layers_0']['mlp']['wi_0']['kernel']"   # logical ("embed", "mlp")
    assert params[kernel] == ["fsdp", "model"]
    assert params["['token_embedder']['embedding']"] == ["model", "fsdp"]
    opt = {k: v for k, v in specs.items() if k.startswith(".opt_state")}
    for moment in ("mu", "nu"):
      for path, spec in params.items():
        matches = [k for k in opt if k.endswith(f".{moment}{path}")]
        assert len(matches) == 1, (moment, path, sorted(opt))
        assert opt[matches[0]] == spec, matches[0]
    others = {k: v for k, v in opt.items() if ".mu[" not in k and ".nu[" not in k}
    assert any(k.endswith(".count") for k in others), sorted(others)
    assert all(v == [] for v in others.values()), others
    assert specs[".step"] == [] and specs[".nonfinite_step"] == []


# --- checkpoints across meshes ----------------------------------------------------------------

@pytest.mark.parametrize("target", ["1x8x1", "8x1x1", REFERENCE])
def test_restore_onto_a_different_mesh(worker, target):
  results, _ = worker
  restore = results["restore"]
  assert restore["saved_from"] == "2x2x2" != target
  entry = restore["targets"][target]
  assert "error" not in entry, entry.get("error")
  assert entry["type"] == "TrainState" and entry["same_structure"]
  assert entry["exact"], f"max abs diff {entry['max_abs_diff']}"
  assert entry["step"] == results["num_steps"]
  assert entry["matches_target_shardings"]
  assert entry["specs"] == results["meshes"][target]["setup_state_specs"]
  assert entry["devices_per_leaf"] == [results["meshes"][target]["num_devices"]]
  assert entry["param_bytes_per_device"] == results["meshes"][target]["param_bytes_per_device"]
  # Training continues on the new mesh as it would have on the old one.
  np.testing.assert_allclose(entry["next_loss"], restore["next_loss_on_source"],
                             rtol=LOSS_RTOL, atol=LOSS_ATOL)


UNEVEN_CODE = """
import json, jax, flax.linen as nn
from musiclm_jax.core import partitioning
mesh = partitioning.create_mesh((1, 8, 1))
tree = {"proj": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((12, 16), "float32"),
                                     ("embed", "mlp")),
        "wide": nn.Partitioned(jax.ShapeDtypeStruct((16, 12), "float32"), ("embed", "mlp"))}
shardings = partitioning.logical_to_shardings(mesh, tree, partitioning.logical_axis_rules())
print(json.dumps({k: [str(a) for a in s.spec] for k, s in shardings.items()}))
"""


def test_a_dimension_the_mesh_does_not_divide_stays_whole():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", UNEVEN_CODE], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  specs = json.loads(result.stdout.strip().splitlines()[-1])
  # 12 rows cannot split 8 ways: that dimension is whole on each device; 16 rows still shard.
  assert specs == {"proj": ["None", "model"], "wide": ["fsdp", "model"]}
