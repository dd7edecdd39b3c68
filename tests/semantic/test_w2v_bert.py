"""w2v-BERT: span masking, distractors, losses, sizes, and training through `musiclm_jax.train`."""
import json
import math
import os
import subprocess
import sys

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.semantic import masking
from musiclm_jax.stages import token_layout
from musiclm_jax.semantic import w2v_bert_losses as losses
from musiclm_jax.core.gin_utils import PACKAGE_GIN_DIR
from musiclm_jax.core.train_state import TrainState
from musiclm_jax.semantic.w2v_bert import W2vBertConfig
from tests.w2v_bert_helpers import CLIP_SAMPLES, TASK, init_params, tiny_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _runs(row):
  """(start, length) of each run of True in a bool vector."""
  edges = np.diff(np.concatenate([[0], row.astype(int), [0]]))
  starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
  return list(zip(starts, ends - starts))


def test_span_mask_covers_the_expected_fraction_in_spans_of_ten():
  mask = np.asarray(masking.span_mask(jax.random.key(0), 2048, 200, 0.065, 10))
  expected = masking.expected_mask_fraction(200, 0.065, 10)
  assert abs(expected - (1 - 0.935 ** 10)) < 0.03  # ~0.49 away from the edges
  assert abs(mask.mean() - expected) < 0.005
  for row in mask[:200]:
    # Overlapping spans merge, so every run is at least one span long (unless cut by the end).
    assert all(length >= 10 for start, length in _runs(row) if start + length < 200)
  assert not np.asarray(masking.span_mask(jax.random.key(1), 4, 50, 0.0, 10)).any()
  assert np.asarray(masking.span_mask(jax.random.key(1), 4, 50, 1.0, 10)).all()
  with pytest.raises(ValueError, match="mask_prob"):
    masking.span_mask(jax.random.key(1), 4, 50, 1.5, 10)


def test_distractors_are_other_masked_frames_of_the_same_clip():
  mask = np.zeros((3, 30), bool)
  mask[0, 5:15] = True
  mask[1, [2, 20]] = True
  mask[2, 7] = True  # a lone masked frame has no distractor
  indices, valid = losses.sample_distractors(jax.random.key(0), jnp.asarray(mask), 50)
  indices, valid = np.asarray(indices), np.asarray(valid)
  assert valid[0].all() and valid[1].all() and not valid[2].any()
  for t in range(5, 15):
    assert set(indices[0, t]) <= set(range(5, 15)) - {t}
  assert set(np.unique(indices[0, 5:15])) == set(range(5, 15))  # uniform: all get drawn
  assert (indices[1, 2] == 20).all() and (indices[1, 20] == 2).all()


def test_contrastive_loss_rewards_context_that_matches_its_target():
  rng = jax.random.split(jax.random.key(0), 3)
  quantized = jax.random.normal(rng[0], (2, 20, 8))
  ids = jnp.arange(40).reshape(2, 20)
  mask = jnp.ones((2, 20), bool)
  distractors, valid = losses.sample_distractors(rng[1], mask, 10)
  contrastive = jax.jit(losses.contrastive_loss)
  good, good_metrics = contrastive(quantized, quantized, ids, mask, distractors, valid)
  bad, _ = contrastive(jax.random.normal(rng[2], (2, 20, 8)), quantized, ids, mask, distractors,
                       valid)
  assert float(good_metrics["contrastive_accuracy"]) == 1.0
  assert float(good) < 0.1 < float(bad)
  # A distractor with the target's own codeword is ignored, not counted as a negative.
  same, _ = contrastive(quantized, quantized, jnp.zeros_like(ids), mask, distractors, valid)
  assert float(same) == pytest.approx(0.0, abs=1e-6)


def test_diversity_loss_is_zero_for_uniform_codes_and_near_one_for_collapse():
  diversity = jax.jit(losses.diversity_loss)
  uniform, perplexity = diversity(jnp.zeros((2, 5, 64)))
  collapsed, _ = diversity(jnp.zeros((2, 5, 64)).at[..., 3].set(100.0))
  assert float(uniform) == pytest.approx(0.0, abs=1e-4)
  assert float(perplexity) == pytest.approx(64, rel=1e-4)
  assert float(collapsed) == pytest.approx(63 / 64, abs=1e-3)


@pytest.mark.parametrize("samples", [1, 639, 640, 641, 3200, 4001])
def test_features_come_at_25_hz_with_the_ceil_rule(samples):
  model = tiny_model()
  params = jax.eval_shape(lambda: model.get_initial_variables(
      jax.random.key(0), {"audio": (1, 640)}))["params"]
  features = jax.eval_shape(lambda p: model.features(p, jnp.zeros((2, samples)), 1),
                            nn.meta.unbox(params))
  assert features.shape == (2, math.ceil(samples / 640), 32)


def test_frame_rate_agrees_with_the_token_layout():
  config = W2vBertConfig()
  assert config.sample_rate == token_layout.PAPER.semantic_sample_rate
  assert config.hop == token_layout.PAPER.semantic_hop == 640
  assert token_layout.PAPER.frame_rate("semantic") == 25


def test_bad_wav_and_feature_layer_are_named():
  model = tiny_model()
  params = nn.meta.unbox(jax.eval_shape(lambda: model.get_initial_variables(
      jax.random.key(0), {"audio": (1, 640)}))["params"])
  features = lambda wav, layer: jax.eval_shape(lambda p: model.features(p, wav, layer), params)
  with pytest.raises(ValueError, match=r"\[batch, samples\].*wav\[None\]"):
    features(jnp.zeros(640), 1)
  with pytest.raises(ValueError, match="empty wav"):
    features(jnp.zeros((1, 0)), 1)
  with pytest.raises(ValueError, match="feature layer 7 is not an MLM layer"):
    features(jnp.zeros((1, 640)), 7)


def _param_count(gin_file):
  gin.clear_config()
  try:
    gin.add_config_file_search_path(PACKAGE_GIN_DIR)
    gin.parse_config_file(os.path.join(PACKAGE_GIN_DIR, gin_file))
    model = gin.query_parameter("MODEL/macro.value").scoped_configurable_fn()
    layer = gin.query_parameter("SEMANTIC_LAYER/macro.value")
  finally:
    gin.clear_config()
  shapes = jax.eval_shape(lambda: model.get_initial_variables(jax.random.key(0),
                                                              {"audio": (1, 640)}))
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.meta.unbox(shapes["params"])))
  return count, layer, model.config


def test_gin_sizes_and_the_paper_xl_is_600m_parameters():
  paper, paper_layer, config = _param_count("models/w2v_bert/paper.gin")
  assert abs(paper - 600e6) / 600e6 < 0.10, paper
  assert paper_layer == 7 and config.num_mlm_layers == config.num_contrastive_layers == 12
  assert config.emb_dim == 1024 and config.num_heads == 8 and config.codebook_size == 1024
  base, base_layer, _ = _param_count("models/w2v_bert/base.gin")
  tiny, tiny_layer, tiny_config = _param_count("models/w2v_bert/tiny.gin")
  assert tiny < 100e3 < base < paper
  assert tiny_layer == tiny_config.num_mlm_layers == 1 and base_layer == 4


def test_eval_is_deterministic_and_train_step_anneals_gumbel_with_microbatches():
  model = tiny_model()
  wav = jax.random.normal(jax.random.key(0), (4, 1280)) * 0.1
  params = init_params(model)
  evaluate = jax.jit(model.eval_fn)
  first, metrics = evaluate(params, {"audio": wav})
  again, _ = evaluate(params, {"audio": wav})
  assert float(first) == float(again) and np.isfinite(float(first))
  assert {"contrastive_loss", "diversity_loss", "mlm_loss", "mlm_accuracy",
          "code_perplexity"} <= set(metrics)
  optimizer = optax.sgd(0.01)
  state = TrainState.create(params, optimizer.init(params)).replace(step=jnp.asarray(100))
  state, metrics = jax.jit(lambda s: model.train_step(
      s, {"audio": wav}, jax.random.key(2), optimizer, num_microbatches=2))(state)
  assert float(metrics["gumbel_temperature"]) == pytest.approx(2.0 * 0.99 ** 100, rel=1e-4)
  assert int(state.step) == 101 and int(state.nonfinite_step) == -1


@pytest.mark.slow
def test_tiny_w2v_bert_trains_through_the_train_command(tmp_path):
  task_gin = tmp_path / "task.gin"
  task_gin.write_text(f"import tests.w2v_bert_helpers\nMIXTURE_OR_TASK_NAME = '{TASK}'\n"
                      f"TASK_FEATURE_LENGTHS = {{'audio': {CLIP_SAMPLES}}}\n")
  model_dir = tmp_path / "model"
  command = [sys.executable, "-m", "musiclm_jax.train", "--gin_file=models/w2v_bert/tiny.gin",
             "--gin_file=runs/train.gin", f"--gin_file={task_gin}",
             f"--gin.MODEL_DIR='{model_dir}'", "--gin.TRAIN_STEPS=40", "--gin.WARMUP_STEPS=10",
             "--gin.LEARNING_RATE=3e-3", "--gin.trainer.train.log_every=10"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (model_dir / "metrics.txt").read_text().splitlines()]
  train = [r for r in records if "train/loss" in r]
  assert len(train) == 4
  assert train[-1]["train/loss"] < train[0]["train/loss"] - 1.0, [r["train/loss"] for r in train]
  assert train[-1]["train/contrastive_loss"] < train[0]["train/contrastive_loss"]
  assert train[-1]["train/mlm_loss"] < train[0]["train/mlm_loss"]
  assert any(np.isfinite(r.get("eval/loss", np.nan)) for r in records)
  assert (model_dir / "checkpoints" / "40" / "state").is_dir()
