"""Conditioning on MuLan's first levels only (DecoderOnlyModel.mulan_levels,
mulan_level_dropout, decoder_params["mulan_levels"])."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.stages import token_layout
from tests.stages.test_decoding import LAYOUT, _params, _prompt_batch, _stage_model


def _batch_with_targets(model, batch_size, length):
  n = LAYOUT.mulan_levels
  batch = _prompt_batch(model, batch_size, n, length)
  targets = jnp.roll(batch["decoder_input_tokens"], -1, -1).at[:, -1].set(5)
  return dict(batch, decoder_target_tokens=targets)


def test_kept_levels_blank_exactly_the_levels_after_them():
  model = _stage_model("semantic")
  n = LAYOUT.mulan_levels
  batch = _batch_with_targets(model, 3, 12)
  kept = model.keep_mulan_levels(batch, jnp.array([0, 1, n]))
  inputs, targets = np.asarray(kept["decoder_input_tokens"]), np.asarray(kept["decoder_target_tokens"])
  original = np.asarray(batch["decoder_input_tokens"])
  assert np.all(inputs[0, 1:n + 1] == 0) and np.all(targets[0, :n] == 0)
  assert inputs[1, 1] == original[1, 1] and np.all(inputs[1, 2:n + 1] == 0)
  np.testing.assert_array_equal(inputs[2], original[2])
  np.testing.assert_array_equal(inputs[:, n + 1:], original[:, n + 1:])  # never past MuLan


def test_training_conditions_on_the_configured_levels_and_drops_deeper_ones_at_random():
  model = _stage_model("semantic", mulan_levels=2)
  batch = _batch_with_targets(model, 2, 12)
  seen, _ = model.training_conditioning(batch, None)
  np.testing.assert_array_equal(seen["decoder_input_tokens"],
                                model.keep_mulan_levels(batch, jnp.array([2, 2]))[
                                    "decoder_input_tokens"])
  params = _params(model, 12)
  other = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].at[:, 3:5].add(1))
  # Levels 3 and 4 do not count: the eval score is the same whatever they hold.
  np.testing.assert_allclose(model.score_batch(params, batch), model.score_batch(params, other),
                             rtol=1e-6)

  dropping = _stage_model("semantic", mulan_level_dropout=1.0)
  n = LAYOUT.mulan_levels
  many = _batch_with_targets(dropping, 256, 12)
  seen, rng = dropping.training_conditioning(many, jax.random.key(3))
  assert rng is not None
  kept = np.sum(np.asarray(seen["decoder_input_tokens"])[:, 1:n + 1] > 0, axis=1)
  assert set(kept) == set(range(1, n))  # always shorter, never none (that is cfg_dropout's)
  # Nothing random without an rng, nothing blanked with all levels and no dropout.
  plain = _stage_model("semantic")
  assert plain.training_conditioning(many, jax.random.key(3))[0] is many


def test_sampling_on_fewer_levels_equals_sampling_the_blanked_prompt():
  model = _stage_model("semantic")
  length, n = 16, LAYOUT.mulan_levels
  params = _params(model, length)
  batch = _prompt_batch(model, 2, n, length)
  greedy = {"temperature": 0.0}
  fewer = np.asarray(model.predict_batch_with_aux(
      params, batch, decoder_params={**greedy, "mulan_levels": 1})[0])
  blanked = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].at[:, 2:n + 1].set(0))
  np.testing.assert_array_equal(
      fewer, np.asarray(model.predict_batch_with_aux(params, blanked, decoder_params=greedy)[0]))
  all_levels = np.asarray(model.predict_batch_with_aux(params, batch, decoder_params=greedy)[0])
  assert not np.array_equal(fewer, all_levels)
  with pytest.raises(ValueError, match="mulan_levels"):
    model.predict_batch_with_aux(params, batch, decoder_params={"mulan_levels": n + 1})


def test_continuing_on_fewer_levels_keeps_every_token_in_its_level():
  # Blanked levels are zeros: the prompt's length must be counted before they are blanked,
  # or the level masks shift and a coarse stage writes ids of the wrong RVQ level.
  model = _stage_model("coarse", mulan_levels=1)
  stage = model.stage
  ((stream, levels),) = stage.writes
  num_inputs = sum(len(lv) * (1 if s == "mulan" else 2) for s, lv in stage.reads)
  length = num_inputs + 1 + 4 * len(levels) + 1
  params = _params(model, length)
  batch = _prompt_batch(model, 3, num_inputs, length)
  decodes = np.asarray(model.predict_batch_with_aux(
      params, batch, jax.random.key(0), decoder_params={"temperature": 2.0},
      prompt_with_targets=True)[0])
  ranges = stage.level_ranges(stream, levels)
  for j in range(4 * len(levels)):
    lo, hi = ranges[j % len(levels)]
    assert np.all((decodes[:, j] >= lo) & (decodes[:, j] < hi)), j


def test_level_options_are_checked():
  with pytest.raises(ValueError, match="mulan_levels must be an int from 1"):
    _stage_model("semantic", mulan_levels=0)
  with pytest.raises(ValueError, match="mulan_level_dropout"):
    _stage_model("semantic", mulan_level_dropout=1.5)
  with pytest.raises(ValueError, match="need a stage that reads MuLan"):
    _stage_model("fine", mulan_levels=1)
  assert token_layout.TINY.mulan_levels == LAYOUT.mulan_levels
