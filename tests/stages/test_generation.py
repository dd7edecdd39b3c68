"""Long generation: window plans, lengths, joins, story mode, continuation (untrained stages)."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from musiclm_jax.stages import generation, token_layout
from musiclm_jax.stages.stage_model import DecoderOnlyModel
from musiclm_jax.stages.transformer import DecoderOnlyTransformer
from tests.helpers import tiny_transformer_config

LAYOUT = token_layout.TINY


class RecordingSampler(generation.StageSampler):
  """Remembers each window's prefix ids and the ids it produced."""

  def sample(self, input_ids, prefix_ids, num_new, rng, num_targets=None):
    out = super().sample(input_ids, prefix_ids, num_new, rng, num_targets)
    self.calls.append((input_ids, prefix_ids, out))
    return out


def _sampler(stage_name, length):
  stage = LAYOUT.stage(stage_name)
  model = DecoderOnlyModel(DecoderOnlyTransformer(tiny_transformer_config(
      vocab_size=stage.vocab_size, num_layers=1)), stage=stage)
  params = nn.meta.unbox(model.get_initial_variables(
      jax.random.key(0), {"decoder_input_tokens": (1, length)})["params"])
  sampler = RecordingSampler(model, params, {"temperature": 1.0})
  object.__setattr__(sampler, "calls", [])
  return sampler


def _mulan(seed, batch=2):
  return np.random.default_rng(seed).integers(0, LAYOUT.mulan_codebook_size,
                                              (batch, LAYOUT.mulan_levels))


def test_window_plan_covers_everything_once_and_keeps_context():
  windows = generation.plan_windows(total=100, window=40, context=20)
  assert windows[0] == generation.Window(0, 0, 40)
  assert [w.end for w in windows] == [40, 60, 80, 100]
  assert all(w.prefix_end - w.start == 20 for w in windows[1:])
  last = generation.plan_windows(total=90, window=40, context=20)[-1]
  assert (last.start, last.end) == (50, 90) and last.end - last.start == 40
  chunks = generation.plan_windows(total=90, window=40, context=0, align_last_to_end=False)
  assert [(w.start, w.end) for w in chunks] == [(0, 40), (40, 80), (80, 90)]
  with pytest.raises(ValueError, match="context"):
    generation.plan_windows(10, 4, 4)


def test_long_semantic_generation_has_the_requested_length_and_windows_join():
  sampler = _sampler("semantic", 4 + 50 + 1)
  semantic = generation.generate_semantic(
      sampler, LAYOUT, [(_mulan(0), 5.0)], jax.random.key(1), crop_seconds=2.0,
      context_seconds=1.0)
  assert semantic.shape == (2, 125)
  assert semantic.min() >= 0 and semantic.max() < LAYOUT.semantic_codebook_size
  stage = sampler.stage
  produced = np.zeros((2, 0), np.int64)
  for i, (_, prefix, new) in enumerate(sampler.calls):
    if i:  # the prefix of window k+1 is the tail of what windows <= k produced
      tail = produced[:, -prefix.shape[1]:]
      np.testing.assert_array_equal(stage.decode("semantic", prefix)[..., 0], tail)
      assert prefix.shape[1] == 25
    produced = np.concatenate([produced, stage.decode("semantic", new)[..., 0]], 1)
  np.testing.assert_array_equal(produced, semantic)


def test_story_mode_switches_conditioning_per_segment():
  sampler = _sampler("semantic", 4 + 50 + 1)
  story = [(_mulan(1), 2.0), (_mulan(2), 2.0), (_mulan(3), 1.0)]
  semantic = generation.generate_semantic(sampler, LAYOUT, story, jax.random.key(2),
                                          crop_seconds=2.0, context_seconds=1.0)
  assert semantic.shape == (2, 125)
  used = [sampler.stage.decode("mulan", inputs) for inputs, _, _ in sampler.calls]
  # windows produce frames [0,50) [50,75) [75,100) [100,125): segments 1, 2, 2, 3
  expected = [_mulan(1), _mulan(2), _mulan(2), _mulan(3)]
  assert len(used) == len(expected)
  for got, want in zip(used, expected):
    np.testing.assert_array_equal(got, want)


def test_semantic_continuation_keeps_the_prompt_and_adds_the_rest():
  sampler = _sampler("semantic", 4 + 50 + 1)
  prompt = np.random.default_rng(4).integers(0, 64, (2, 30))
  semantic = generation.generate_semantic(sampler, LAYOUT, [(_mulan(5), 3.0)],
                                          jax.random.key(3), prompt=prompt, crop_seconds=2.0)
  assert semantic.shape == (2, 75)
  np.testing.assert_array_equal(semantic[:, :30], prompt)
  first_prefix = sampler.stage.decode("semantic", sampler.calls[0][1])[..., 0]
  np.testing.assert_array_equal(first_prefix, prompt[:, -first_prefix.shape[1]:])


def test_coarse_windows_follow_semantic_and_fine_chunks_do_not_overlap():
  semantic = np.random.default_rng(6).integers(0, 64, (2, 75))  # 3 s
  coarse_sampler = _sampler("coarse", 4 + 25 + 2 * 50 + 1)
  coarse = generation.generate_coarse(coarse_sampler, LAYOUT, [(_mulan(7), 3.0)], semantic,
                                      jax.random.key(4), crop_seconds=1.0, context_seconds=0.5)
  assert coarse.shape == (2, 150, LAYOUT.coarse_levels)
  stage = coarse_sampler.stage
  for inputs, _, _ in coarse_sampler.calls:
    sem = stage.decode("semantic", inputs[:, LAYOUT.mulan_levels:])[..., 0]
    assert any(np.array_equal(sem, semantic[:, s:s + sem.shape[1]]) for s in range(0, 76 - sem.shape[1]))
  fine_sampler = _sampler("fine", 2 * 50 + 2 * 50 + 1)
  fine = generation.generate_fine(fine_sampler, LAYOUT, coarse, jax.random.key(5),
                                  crop_seconds=1.0)
  assert fine.shape == (2, 150, LAYOUT.fine_levels)
  assert [c[1].shape[1] for c in fine_sampler.calls] == [0, 0, 0]
  assert generation.acoustic_codes(coarse, fine).shape == (2, 150, LAYOUT.acoustic_levels)
