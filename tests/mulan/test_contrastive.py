"""Symmetric InfoNCE: the formula, the learned temperature's clip, retrieval recall, and the
loss over a batch sharded across 8 devices equal to the one-device loss."""
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.mulan import contrastive

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_info_nce(audio, text, scale):
  logits = scale * audio.astype(np.float64) @ text.astype(np.float64).T

  def cross_entropy(logits):
    log_z = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
    return np.mean(log_z - np.diagonal(logits))

  return 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))


def test_loss_is_the_mean_of_both_directions_cross_entropies():
  rng = np.random.default_rng(0)
  audio, text = _unit(rng.normal(size=(2, 12, 8))).astype(np.float32)
  loss, metrics = contrastive.info_nce(jnp.asarray(audio), jnp.asarray(text), jnp.log(7.0))
  np.testing.assert_allclose(float(loss), _numpy_info_nce(audio, text, 7.0), rtol=1e-5)
  np.testing.assert_allclose(
      float(loss), 0.5 * (metrics["audio_to_text_loss"] + metrics["text_to_audio_loss"]),
      rtol=1e-6)
  np.testing.assert_allclose(metrics["positive_cosine"], np.mean(np.sum(audio * text, -1)),
                             rtol=1e-5)
  off_diagonal = (audio @ text.T)[~np.eye(12, dtype=bool)]
  np.testing.assert_allclose(metrics["negative_cosine"], off_diagonal.mean(), atol=1e-6)


def test_aligned_pairs_give_low_loss_and_full_accuracy():
  rng = np.random.default_rng(1)
  x = jnp.asarray(_unit(rng.normal(size=(16, 32))).astype(np.float32))
  loss, metrics = contrastive.info_nce(x, x, jnp.log(50.0))
  assert float(loss) < 0.05
  assert float(metrics["audio_to_text_accuracy"]) == 1.0
  assert float(metrics["text_to_audio_accuracy"]) == 1.0
  # Unrelated pairs at a low scale: about log(batch).
  y = jnp.asarray(_unit(rng.normal(size=(16, 32))).astype(np.float32))
  loss, _ = contrastive.info_nce(x, y, jnp.log(1.0))
  assert abs(float(loss) - np.log(16)) < 0.2


def test_learned_scale_is_clipped_at_100():
  x = jnp.ones((2, 4)) / 2.0
  _, metrics = contrastive.info_nce(x, x, jnp.log(1e4))
  assert float(metrics["logit_scale"]) == contrastive.MAX_LOGIT_SCALE


def test_mismatched_shapes_are_an_error():
  with pytest.raises(ValueError, match=r"\(4, 8\) and \(4, 6\)"):
    contrastive.info_nce(jnp.zeros((4, 8)), jnp.zeros((4, 6)), 0.0)


def test_recall_at_k():
  rng = np.random.default_rng(2)
  keys = _unit(rng.normal(size=(20, 16)))
  perfect = contrastive.recall_at_k(keys, keys)
  assert perfect["R@1"] == 1.0 and perfect["median_rank"] == 1.0
  assert perfect["chance_R@1"] == pytest.approx(1 / 20)
  # Query i is key i + 1: the positive is never the nearest key.
  shifted = contrastive.recall_at_k(np.roll(keys, -1, axis=0), keys)
  assert shifted["R@1"] == 0.0
  # A tie with another key counts against the positive.
  tied = contrastive.recall_at_k(np.ones((3, 2)), np.ones((3, 2)))
  assert tied["R@1"] == 0.0


@pytest.fixture(scope="module")
def mesh_results(tmp_path_factory):
  out = tmp_path_factory.mktemp("contrastive_mesh")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-m", "tests.contrastive_mesh_worker", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return {name: dict(np.load(out / f"{name}.npz")) for name in ("1dev", "8x1x1", "2x2x2")}


def test_gathered_embedding_loss_equals_single_device_loss(mesh_results):
  reference = mesh_results["1dev"]
  audio, text = reference["embeddings"]
  expected = _numpy_info_nce(audio, text, 10.0)
  for name, results in mesh_results.items():
    np.testing.assert_allclose(float(results["embedding_loss"]), expected, rtol=1e-5,
                               err_msg=name)
  # The sharded programs gather the keys across devices; one device has nothing to gather.
  assert int(mesh_results["8x1x1"]["all_gathers"]) > 0
  assert int(reference["all_gathers"]) == 0


@pytest.mark.parametrize("mesh", ["8x1x1", "2x2x2"])
def test_sharded_mulan_train_steps_match_one_device(mesh_results, mesh):
  reference, sharded = mesh_results["1dev"], mesh_results[mesh]
  for key in ("loss", "audio_to_text_accuracy", "text_to_audio_accuracy", "grad_norm"):
    np.testing.assert_allclose(sharded[key], reference[key], rtol=1e-4, err_msg=key)
  assert reference["loss"][-1] < reference["loss"][0]
  for key in reference:
    if key.startswith("param/"):
      np.testing.assert_allclose(sharded[key], reference[key], rtol=1e-4, atol=1e-5,
                                 err_msg=key)
  if mesh == "2x2x2":  # embed over fsdp, heads / mlp / vocab over model
    assert int(sharded["num_sharded_params"]) > 0
