"""The t5x model around a stage: axes t5x can partition, rules on its mesh, and the same
scores and samples as our stage model."""
import subprocess
import sys

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from musiclm_jax.stages import token_layout
from musiclm_jax.stages.stage_model import DecoderOnlyModel
from musiclm_jax.stages.transformer import DecoderOnlyTransformer
from tests.helpers import tiny_transformer_config
from tests.train_runner import REPO, env


def test_importing_the_bridge_without_t5x_says_in_one_line_how_to_install_it():
  code = ("import sys; sys.modules['t5x'] = None\n"
          "try:\n  import musiclm_jax.t5x_bridge\n"
          "except ImportError as e:\n  print('ERROR:', e)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True,
                       text=True, timeout=300)
  lines = [line for line in out.stdout.splitlines() if line.startswith("ERROR:")]
  assert len(lines) == 1, out.stdout + out.stderr[-2000:]
  assert "pip install -e '.[t5x]'" in lines[0] and "github.com/google-research/t5x" in lines[0]


t5x_models = pytest.importorskip("t5x.models")
from t5x import partitioning as t5x_partitioning  # noqa: E402
from t5x import train_state as t5x_train_state  # noqa: E402

from musiclm_jax.t5x_bridge import partitioning as bridge_partitioning  # noqa: E402
from musiclm_jax.t5x_bridge.model import StageModel, optax_optimizer  # noqa: E402

LAYOUT = token_layout.TINY
# Hot sampling with classifier-free guidance: an unmasked model would stray out of its levels.
GUIDED = {"temperature": 2.0, "guidance_scale": 3.0}


def _models(stage_name="coarse", cfg_dropout_rate=0.0, **kwargs):
  stage = LAYOUT.stage(stage_name)
  module = DecoderOnlyTransformer(tiny_transformer_config(
      vocab_size=token_layout.padded_vocab_size(stage.vocab_size, 128), num_heads=4))
  ours = DecoderOnlyModel(module, stage=stage, cfg_dropout_rate=cfg_dropout_rate, **kwargs)
  return ours, StageModel(ours, optax_optimizer(optax.adamw(1e-3)))


def _batch(stage, batch=3, seed=0):
  """A prefix-LM batch of valid ids: conditioning (inputs) then targets and EOS."""
  rng = np.random.default_rng(seed)

  def ids(entries, frames):
    out = []
    for stream, levels in entries:
      n = 1 if stream == "mulan" else frames
      for _ in range(n):
        out += [rng.integers(lo, hi) for lo, hi in stage.level_ranges(stream, levels)]
    return out

  rows = []
  for _ in range(batch):
    inputs, targets = ids(stage.reads, 2), ids(stage.writes, 2) + [token_layout.EOS_ID]
    rows.append((inputs, targets))
  length = len(rows[0][0]) + len(rows[0][1])
  target = np.array([i + t for i, t in rows], np.int32)
  n_in = len(rows[0][0])
  return {
      "decoder_target_tokens": jnp.asarray(target),
      "decoder_input_tokens": jnp.asarray(np.pad(target[:, :-1], ((0, 0), (1, 0)))),
      "decoder_causal_attention": jnp.asarray(
          np.tile(np.arange(length) <= n_in, (batch, 1)).astype(np.int32)),
      "decoder_loss_weights": jnp.asarray(
          np.tile(np.arange(length) >= n_in, (batch, 1)).astype(np.int32)),
  }, n_in


def test_params_axes_name_every_parameter_and_t5x_partitions_them_over_its_mesh():
  _, model = _models()
  variables = model.get_initial_variables(jax.random.key(0), {"decoder_input_tokens": (1, 16)})
  state = t5x_train_state.FlaxOptimTrainState.create(model.optimizer_def, variables)
  partitioner = bridge_partitioning.Partitioner(
      mesh_shape=(1, -1), logical_axis_rules=bridge_partitioning.logical_axis_rules())
  specs = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(partitioner.get_mesh_axes(state).params), sep="/")
  assert set(specs) == set(flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables["params"]), sep="/"))
  assert tuple(specs["logits_dense/kernel"]) == (None, "model")
  assert tuple(specs["token_embedder/embedding"]) == ("model", None)
  assert tuple(specs["layers_0/attention/query/kernel"]) == (None, "model", None)
  assert tuple(partitioner.mesh.shape.values()) == (1, jax.device_count())


def test_our_logical_rules_land_on_t5x_data_and_model_axes():
  rules = dict(bridge_partitioning.logical_axis_rules())
  assert rules["batch"] == "data" and rules["activation_batch"] == "data"
  assert rules["heads"] == rules["vocab"] == rules["mlp"] == "model"
  assert rules["embed"] is None  # replicated over data, as t5x's default rules do
  assert dict(bridge_partitioning.logical_axis_rules(shard_params_over_data=True))["embed"] == "data"
  with pytest.raises(ValueError, match="'pipeline'"):
    bridge_partitioning.logical_axis_rules([("layers", "pipeline")])


def test_partitioner_mesh_shape_must_fit_the_devices():
  partitioner = bridge_partitioning.Partitioner(mesh_shape=(3, 5))
  with pytest.raises(ValueError, match=r"does not fit \d+ devices"):
    partitioner.mesh  # noqa: B018


def test_t5x_scores_and_losses_are_ours_and_the_vocabulary_is_the_tasks():
  ours, model = _models()
  assert model.output_vocabulary.vocab_size == ours.stage.vocab_size
  assert model.output_vocabulary.eos_id == token_layout.EOS_ID
  params = nn.meta.unbox(ours.get_initial_variables(
      jax.random.key(1), {"decoder_input_tokens": (1, 16)})["params"])
  batch, _ = _batch(ours.stage)
  np.testing.assert_allclose(model.score_batch(params, batch), ours.score_batch(params, batch),
                             rtol=1e-5)
  t5x_loss, metrics = model.loss_fn(params, batch, None)
  our_loss, _ = ours.loss_fn(params, batch, None)
  np.testing.assert_allclose(t5x_loss, our_loss, rtol=1e-5)
  assert "accuracy" in metrics


def test_t5x_scores_see_only_the_mulan_levels_the_stage_conditions_on():
  ours, model = _models(mulan_levels=1)
  params = nn.meta.unbox(ours.get_initial_variables(
      jax.random.key(1), {"decoder_input_tokens": (1, 16)})["params"])
  batch, _ = _batch(ours.stage)
  np.testing.assert_allclose(model.score_batch(params, batch), ours.score_batch(params, batch),
                             rtol=1e-5)
  _, all_levels = _models()
  assert not np.allclose(model.score_batch(params, batch),
                         all_levels.score_batch(params, batch), rtol=1e-5)


def test_conditioning_dropout_trains_the_unconditional_model_too():
  _, model = _models(cfg_dropout_rate=1.0)
  params = nn.meta.unbox(model.stage_model.get_initial_variables(
      jax.random.key(1), {"decoder_input_tokens": (1, 16)})["params"])
  batch, _ = _batch(model.stage)
  blank = model.stage_model.blank_conditioning(batch, jnp.ones((3,), bool))
  dropped, _ = model.loss_fn(params, batch, jax.random.key(2))
  expected, _ = t5x_models.DecoderOnlyModel.loss_fn(model, params, blank, jax.random.key(2))
  kept, _ = model.loss_fn(params, batch, None)
  np.testing.assert_allclose(dropped, expected, rtol=1e-6)
  assert not np.isclose(dropped, kept)


def test_t5x_predictions_are_our_guided_samples_sorted_best_last_with_level_masks():
  ours, model = _models("coarse")
  params = nn.meta.unbox(ours.get_initial_variables(
      jax.random.key(3), {"decoder_input_tokens": (1, 16)})["params"])
  batch, _ = _batch(ours.stage)
  prompt = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"]
                * batch["decoder_causal_attention"])
  rng = jax.random.key(4)
  mine, aux = ours.predict_batch_with_aux(params, prompt, rng, num_decodes=4,
                                          return_all_decodes=True,
                                          decoder_params=GUIDED)
  theirs, t_aux = model.predict_batch_with_aux(
      params, prompt, num_decodes=4, return_all_decodes=True,
      decoder_params={**GUIDED, "decode_rng": rng})
  order = np.argsort(np.asarray(aux["scores"]), axis=-1)
  np.testing.assert_array_equal(np.take_along_axis(np.asarray(mine), order[..., None], 1), theirs)
  assert np.all(np.diff(np.asarray(t_aux["scores"]), axis=-1) >= 0)
  best, _ = model.predict_batch_with_aux(params, prompt, rng, decoder_params=GUIDED,
                                         num_decodes=4)
  unguided, _ = model.predict_batch_with_aux(params, prompt, rng, num_decodes=4,
                                             decoder_params={"temperature": 2.0})
  assert not np.array_equal(best, unguided)  # guidance reaches t5x's predictions
  np.testing.assert_array_equal(best, np.asarray(theirs)[:, -1])
  ((stream, levels),) = ours.stage.writes
  codes = np.asarray(best)[:, :2 * len(levels)]
  ours.stage.decode(stream, codes, levels)  # raises if an id is outside its level's range
  with pytest.raises(ValueError, match="both"):
    model.predict_batch_with_aux(params, prompt, rng, decoder_params={"decode_rng": rng})
