"""Sampling: the KV-cached loop equals naive recomputation; masks, guidance, continuation."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.stages import decoding, token_layout
from musiclm_jax.stages.stage_model import DecoderOnlyModel
from musiclm_jax.stages.transformer import DecoderOnlyTransformer
from tests.helpers import tiny_transformer_config

LAYOUT = token_layout.TINY


def _stage_model(stage_name, pad_to_multiple=1, **kwargs):
  stage = LAYOUT.stage(stage_name)
  module = DecoderOnlyTransformer(tiny_transformer_config(
      vocab_size=token_layout.padded_vocab_size(stage.vocab_size, pad_to_multiple)))
  return DecoderOnlyModel(module, stage=stage, **kwargs)


def _params(model, length):
  return nn.meta.unbox(model.get_initial_variables(
      jax.random.key(0), {"decoder_input_tokens": (1, length)})["params"])


def _prompt_batch(model, batch, num_inputs, length, seed=1):
  """Random valid conditioning ids of the stage's inputs, then room for the targets."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((batch, length), np.int32)
  position = 0
  for stream, levels in model.stage.reads:
    for lo, hi in model.stage.level_ranges(stream, levels) * 64:
      if position == num_inputs:
        break
      ids[:, position] = rng.integers(lo, hi, batch)
      position += 1
  inputs = np.pad(ids[:, :-1], ((0, 0), (1, 0)))
  causal = np.tile((np.arange(length) <= num_inputs).astype(np.int32), (batch, 1))
  return {"decoder_input_tokens": jnp.asarray(inputs), "decoder_causal_attention": jnp.asarray(causal)}


def _naive_sample(model, params, batch, rng, temperature, topk, num_inputs):
  """Full forward per token, consuming the rng exactly like decoding.temperature_sample."""
  seq = np.array(batch["decoder_input_tokens"])
  length = seq.shape[1]
  inputs_lengths = jnp.full((seq.shape[0],), num_inputs)
  mask = model.level_mask_callback(inputs_lengths, length)
  out = []
  for position in range(num_inputs, length):
    logits = model.module.apply({"params": params}, jnp.asarray(seq), jnp.ones_like(seq),
                                decoder_causal_attention=batch["decoder_causal_attention"],
                                enable_dropout=False)[:, position]
    state = decoding.SamplingLoopState(
        step=None, cur_index=jnp.full((seq.shape[0],), position), sequences=None, cache=None,
        rng=None, ended=None, log_prob=None)
    logits = mask(logits, state)
    rng, step_rng = jax.random.split(rng)
    if temperature == 0.0:
      token = np.asarray(jnp.argmax(logits, -1))
    else:
      token = np.asarray(jax.random.categorical(
          step_rng, decoding.apply_top_k(logits, topk) / temperature, axis=-1))
    out.append(token)
    if position + 1 < length:
      seq[:, position + 1] = token
  return np.stack(out, axis=1)


@pytest.mark.parametrize("temperature,topk", [(0.0, 0), (1.0, 0), (0.8, 10)])
def test_kv_cache_sampling_equals_naive_recompute_token_for_token(temperature, topk):
  model = _stage_model("semantic")
  length, num_inputs = 16, LAYOUT.mulan_levels
  params = _params(model, length)
  batch = _prompt_batch(model, 3, num_inputs, length)
  rng = jax.random.key(42)
  decodes, _ = model.predict_batch_with_aux(
      params, batch, rng, decoder_params={"temperature": temperature, "topk": topk})
  expected = _naive_sample(model, params, batch, rng, temperature, topk, num_inputs)
  np.testing.assert_array_equal(np.asarray(decodes)[:, :length - num_inputs], expected)


def _while_bodies(hlo: str) -> dict:
  """Optimised HLO text -> {name: lines} of the computations that while loops run as bodies."""
  computations, current = {}, None
  for line in hlo.splitlines():
    header = re.match(r"^(?:ENTRY )?%?(\S+) .*\{$", line)
    if header:
      current = header.group(1)
      computations[current] = []
    elif current:
      computations[current].append(line)
  return {name: computations[name] for name in set(re.findall(r"body=%?([\w.\-]+)", hlo))}


def test_the_sampling_loop_updates_the_kv_cache_in_place():
  """A decoding step reads the cache, then writes its own key and value into it: compiled,
  the loop must not copy any layer's cache (XLA did, in every step, while the write and the
  reads were unordered; bench/README.md, sample.py)."""
  model = _stage_model("semantic")
  # Batch 1: there the write is a dynamic-update-slice, which XLA copied for (batch 3 lowers
  # to a scatter, which it did not).
  length, num_inputs, batch_size = 16, LAYOUT.mulan_levels, 1
  params = _params(model, length)
  batch = _prompt_batch(model, batch_size, num_inputs, length)
  sample = jax.jit(lambda p, b, r: model.predict_batch_with_aux(p, b, r))
  hlo = sample.lower(params, batch, jax.random.key(0)).compile().as_text()
  config = model.module.config
  cache_shapes = {rf"f32\[{batch_size},{config.num_heads},{config.head_dim},{length}\]",
                  rf"f32\[{batch_size},{config.num_heads},{length},{config.head_dim}\]"}
  decode_loop = max(_while_bodies(hlo).values(), key=len)
  writes = [line for line in decode_loop
            if ("dynamic-update-slice" in line or "scatter" in line)
            and any(re.search(shape, line) for shape in cache_shapes)]
  cache_copies = [line for line in decode_loop if " copy(" in line
                  and any(re.search(shape, line) for shape in cache_shapes)]
  assert len(writes) >= 2 * config.num_layers, "the loop found is not the decoding loop"
  assert not cache_copies, cache_copies[:2]


@pytest.mark.parametrize("pad_to_multiple", [1, 128])
def test_level_masks_hold_for_coarse_and_fine_sampling(pad_to_multiple):
  """Also with the vocabulary padded past the stage's ids: the padding is never sampled."""
  for stage_name in ("coarse", "fine"):
    model = _stage_model(stage_name, pad_to_multiple)
    if pad_to_multiple > 1:
      assert model.module.config.vocab_size > model.stage.vocab_size
    stage = model.stage
    ((stream, levels),) = stage.writes
    num_inputs = 4 if stage_name == "coarse" else 2 * len(stage.stream_levels("acoustic")[:2])
    num_codes = 4 * len(levels)
    length = num_inputs + num_codes + 1
    params = _params(model, length)
    batch = _prompt_batch(model, 4, num_inputs, length, seed=3)
    decodes, _ = model.predict_batch_with_aux(
        params, batch, jax.random.key(3), num_decodes=3, return_all_decodes=True,
        decoder_params={"temperature": 2.0})  # hot: an unmasked model would stray
    decodes = np.asarray(decodes)[..., :num_codes + 1]
    ranges = stage.level_ranges(stream, levels)
    for j in range(num_codes):
      lo, hi = ranges[j % len(levels)]
      assert np.all((decodes[..., j] >= lo) & (decodes[..., j] < hi)), (stage_name, j)
    assert np.all(decodes[..., num_codes] == token_layout.EOS_ID)
    codes = stage.decode(stream, decodes[..., :num_codes].reshape(-1, num_codes), levels)
    assert codes.shape == (12, 4, len(levels))


def test_top_k_and_top_p_keep_the_right_tokens():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda x: np.asarray(x[0] > decoding.NEG_INF / 2)
  np.testing.assert_array_equal(kept(decoding.apply_top_k(logits, 2)), [1, 1, 0, 0])
  np.testing.assert_array_equal(kept(decoding.apply_top_p(logits, 0.7)), [1, 1, 0, 0])
  np.testing.assert_array_equal(kept(decoding.apply_top_p(logits, 0.5)), [1, 0, 0, 0])
  np.testing.assert_array_equal(kept(decoding.apply_top_p(logits, 0.81)), [1, 1, 1, 0])


def test_blanked_conditioning_is_invisible_and_guidance_changes_samples():
  model = _stage_model("semantic", cfg_dropout_rate=0.5)
  length, n = 12, LAYOUT.mulan_levels
  params = _params(model, length)
  batch = _prompt_batch(model, 2, n, length)
  targets = jnp.roll(batch["decoder_input_tokens"], -1, -1).at[:, -1].set(5)
  full = dict(batch, decoder_target_tokens=targets)
  other = dict(full, decoder_input_tokens=full["decoder_input_tokens"].at[:, 1:n + 1].add(1),
               decoder_target_tokens=full["decoder_target_tokens"].at[:, :n].add(1))
  blank = model.blank_conditioning(full, jnp.ones(2, bool))
  blank_other = model.blank_conditioning(other, jnp.ones(2, bool))
  logits = lambda b: model._logits(params, b, None)
  np.testing.assert_allclose(logits(blank)[:, n:], logits(blank_other)[:, n:], rtol=1e-6)
  assert not np.allclose(logits(full)[:, n:], logits(other)[:, n:])

  sample = lambda scale: np.asarray(model.predict_batch_with_aux(
      params, batch, jax.random.key(0), decoder_params={"temperature": 0.0,
                                                        "guidance_scale": scale})[0])
  plain = np.asarray(model.predict_batch_with_aux(params, batch, jax.random.key(0),
                                                  decoder_params={"temperature": 0.0})[0])
  np.testing.assert_array_equal(sample(1.0), plain)
  assert not np.array_equal(sample(5.0), plain)


def test_continuation_from_prompt_tokens_continues_the_same_greedy_sequence():
  model = _stage_model("semantic")
  length, n = 20, LAYOUT.mulan_levels
  params = _params(model, length)
  batch = _prompt_batch(model, 2, n, length)
  greedy = {"temperature": 0.0}
  full = np.asarray(model.predict_batch_with_aux(params, batch, decoder_params=greedy)[0])
  k = 5
  inputs = np.array(batch["decoder_input_tokens"])
  inputs[:, n + 1:n + 1 + k] = full[:, :k]
  continued = np.asarray(model.predict_batch_with_aux(
      params, dict(batch, decoder_input_tokens=jnp.asarray(inputs)), decoder_params=greedy,
      prompt_with_targets=True)[0])
  np.testing.assert_array_equal(continued[:, :length - n - k], full[:, k:length - n])
