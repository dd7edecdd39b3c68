"""The t5x-shaped model interface: train step, accumulation, sampling and scoring agree."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from musiclm_jax.stages import token_layout as tokens_lib
from musiclm_jax.core.train_state import TrainState
from tests.helpers import tiny_decoder_model


def _batch(rng, batch=4, length=10, prompt=3, vocab=64):
  ids = np.asarray(jax.random.randint(rng, (batch, length), 2, vocab))
  inputs = np.concatenate([np.zeros((batch, 1), ids.dtype), ids[:, :-1]], axis=1)
  causal = np.tile((np.arange(length) <= prompt).astype(np.int32), (batch, 1))
  weights = np.tile((np.arange(length) >= prompt).astype(np.int32), (batch, 1))
  return {"decoder_input_tokens": jnp.asarray(inputs), "decoder_target_tokens": jnp.asarray(ids),
          "decoder_causal_attention": jnp.asarray(causal),
          "decoder_loss_weights": jnp.asarray(weights)}


def _state(model, optimizer, shape=(4, 10)):
  variables = model.get_initial_variables(jax.random.key(0), {"decoder_input_tokens": shape})
  params = nn.meta.unbox(variables["params"])
  return TrainState.create(params, optimizer.init(params))


def test_gradient_accumulation_matches_the_full_batch_step():
  model = tiny_decoder_model()
  optimizer = optax.sgd(0.1)
  batch = _batch(jax.random.key(1))
  full, full_metrics = model.train_step(_state(model, optimizer), batch, jax.random.key(2),
                                        optimizer, num_microbatches=1)
  accumulated, acc_metrics = model.train_step(_state(model, optimizer), batch,
                                              jax.random.key(2), optimizer, num_microbatches=2)
  np.testing.assert_allclose(acc_metrics["loss"], full_metrics["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(full.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert int(accumulated.step) == 1 and int(accumulated.nonfinite_step) == -1


def test_loss_ignores_the_prompt_tokens():
  model = tiny_decoder_model()
  params = _state(model, optax.sgd(0.1)).params
  batch = _batch(jax.random.key(3))
  loss, metrics = model.loss_fn(params, batch, None)
  assert float(metrics["num_tokens"]) == 4 * 7
  assert np.isfinite(float(loss))


def _naive_greedy(model, params, batch, prompt):
  """Re-runs the full forward for every new token: the reference for the cached sampler."""
  tokens = np.array(batch["decoder_input_tokens"]) * np.array(batch["decoder_causal_attention"])
  length = tokens.shape[1]
  out, ended = [], np.zeros(tokens.shape[0], bool)
  for position in range(prompt, length):
    logits = model.module.apply({"params": params}, jnp.asarray(tokens),
                                jnp.ones_like(jnp.asarray(tokens)),
                                decoder_causal_attention=batch["decoder_causal_attention"],
                                enable_dropout=False)
    nxt = np.where(ended, 0, np.asarray(jnp.argmax(logits[:, position], axis=-1)))
    ended |= nxt == tokens_lib.EOS_ID
    out.append(nxt)
    if position + 1 < length:
      tokens[:, position + 1] = nxt
  return np.stack(out, axis=1)


def test_greedy_kv_cache_sampling_equals_naive_recompute_and_its_score():
  # Example 1 emits EOS early with these seeds: the sampler must stop there too.
  model = tiny_decoder_model()
  params = _state(model, optax.sgd(0.1)).params
  batch = _batch(jax.random.key(4))
  decodes, aux = model.predict_batch_with_aux(params, batch, jax.random.key(5),
                                              decoder_params={"temperature": 0.0})
  expected = _naive_greedy(model, params, batch, prompt=3)
  np.testing.assert_array_equal(np.asarray(decodes)[:, :7], expected)
  # Scoring the decoded continuation gives the sampler's own log-probability.
  prompt_ids = np.asarray(batch["decoder_target_tokens"])[:, :3]
  targets = np.concatenate([prompt_ids, np.asarray(decodes)[:, :7]], axis=1)
  weights = (targets > 0) & (np.arange(10) >= 3)
  scored = dict(batch, decoder_target_tokens=jnp.asarray(targets),
                decoder_input_tokens=jnp.asarray(np.pad(targets[:, :-1], ((0, 0), (1, 0)))),
                decoder_loss_weights=jnp.asarray(weights.astype(np.int32)))
  np.testing.assert_allclose(model.score_batch(params, scored), aux["scores"], rtol=1e-4)


def test_sampling_is_deterministic_under_a_fixed_rng_and_varies_across_rngs():
  model = tiny_decoder_model()
  params = _state(model, optax.sgd(0.1)).params
  batch = _batch(jax.random.key(6))
  sample = jax.jit(lambda rng: model.predict_batch_with_aux(
      params, batch, rng, num_decodes=2, return_all_decodes=True,
      decoder_params={"temperature": 1.0, "topk": 20})[0])
  a, b, c = sample(jax.random.key(7)), sample(jax.random.key(7)), sample(jax.random.key(8))
  assert a.shape == (4, 2, 10)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_the_trainers_cheaply_compiled_initialisation_matches_the_default_compile():
  # On CPU shard_model compiles the state's initialisation without LLVM's optimisations
  # (it runs once). That must not change the initial state, nor tie it to the first key.
  from musiclm_jax.core import partitioning, trainer  # pylint: disable=import-outside-toplevel
  model = tiny_decoder_model()
  mesh, rules = partitioning.create_mesh(), partitioning.logical_axis_rules()
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in _batch(jax.random.key(0)).items()}
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    setup = trainer.shard_model(model, optax.adamw(1e-3), shapes, mesh, rules)
    cheap = setup.init_fn(jax.random.key(5))
    default = jax.jit(setup.init_fn.__wrapped__)(jax.random.key(5))
    again = setup.init_fn(jax.random.key(6))
  for a, b in zip(jax.tree.leaves(cheap), jax.tree.leaves(default)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(cheap.params),
                                                      jax.tree.leaves(again.params)))
