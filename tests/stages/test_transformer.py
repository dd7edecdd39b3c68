import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from musiclm_jax.stages import token_layout
from musiclm_jax.stages.transformer import DecoderOnlyTransformer, TransformerConfig
from tests.helpers import tiny_decoder_model


def _prefix_batch(rng, batch=3, length=12, prompt=4, vocab=64):
  ids = np.asarray(jax.random.randint(rng, (batch, length), 2, vocab))
  inputs = np.concatenate([np.zeros((batch, 1), ids.dtype), ids[:, :-1]], axis=1)
  causal = (np.arange(length)[None, :] <= prompt).astype(np.int32).repeat(batch, 0)
  return dict(decoder_input_tokens=jnp.asarray(inputs), decoder_target_tokens=jnp.asarray(ids),
              decoder_causal_attention=jnp.asarray(causal))


@pytest.mark.parametrize("attention", [{}, {"attention": "blockwise", "attention_block_size": 4},
                                       {"attention": "flash"}])
def test_kv_cache_decoding_reproduces_full_forward_logits(attention):
  model = tiny_decoder_model(**attention)
  batch = _prefix_batch(jax.random.key(1))
  variables = model.get_initial_variables(jax.random.key(0), {"decoder_input_tokens": (3, 12)})
  params = nn.meta.unbox(variables["params"])
  full = model.module.apply({"params": params}, batch["decoder_input_tokens"],
                            batch["decoder_target_tokens"],
                            decoder_causal_attention=batch["decoder_causal_attention"],
                            enable_dropout=False)
  prompt = batch["decoder_input_tokens"] * batch["decoder_causal_attention"]
  cache, prompt_lengths = model.prefill_cache(params, prompt, batch["decoder_causal_attention"])
  assert np.all(np.asarray(prompt_lengths) == 4)
  for position in range(4, 12):
    step_ids = batch["decoder_input_tokens"][:, position:position + 1]
    logits, variables = model.module.apply({"params": params, "cache": cache}, step_ids,
                                           enable_dropout=False, decode=True, mutable=["cache"])
    cache = variables["cache"]
    np.testing.assert_allclose(logits[:, 0], full[:, position], rtol=1e-5, atol=1e-5)


def test_kv_cache_handles_different_prompt_lengths_in_one_batch():
  model = tiny_decoder_model()
  batch = _prefix_batch(jax.random.key(2), batch=2)
  causal = np.asarray(batch["decoder_causal_attention"]).copy()
  causal[1, 3:] = 0  # second example: prompt of 2 tokens + the one that predicts the first target
  batch["decoder_causal_attention"] = jnp.asarray(causal)
  params = nn.meta.unbox(model.get_initial_variables(
      jax.random.key(0), {"decoder_input_tokens": (2, 12)})["params"])
  full = model.module.apply({"params": params}, batch["decoder_input_tokens"],
                            batch["decoder_target_tokens"],
                            decoder_causal_attention=batch["decoder_causal_attention"],
                            enable_dropout=False)
  cache, lengths = model.prefill_cache(
      params, batch["decoder_input_tokens"] * batch["decoder_causal_attention"],
      batch["decoder_causal_attention"])
  np.testing.assert_array_equal(lengths, [4, 2])
  ids = np.asarray(batch["decoder_input_tokens"])
  logits, _ = model.module.apply({"params": params, "cache": cache},
                                 jnp.asarray(ids[[0, 1], [4, 2]])[:, None], enable_dropout=False,
                                 decode=True, mutable=["cache"])
  np.testing.assert_allclose(logits[0, 0], full[0, 4], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[1, 0], full[1, 2], rtol=1e-5, atol=1e-5)


def test_targets_do_not_leak_into_earlier_positions():
  model = tiny_decoder_model()
  batch = _prefix_batch(jax.random.key(3))
  params = nn.meta.unbox(model.get_initial_variables(
      jax.random.key(0), {"decoder_input_tokens": (3, 12)})["params"])
  apply = lambda b: model.module.apply({"params": params}, b["decoder_input_tokens"],
                                       b["decoder_target_tokens"],
                                       decoder_causal_attention=b["decoder_causal_attention"],
                                       enable_dropout=False)
  changed = dict(batch, decoder_input_tokens=batch["decoder_input_tokens"].at[:, 9].set(5))
  a, b = apply(batch), apply(changed)
  np.testing.assert_allclose(a[:, :9], b[:, :9], rtol=1e-6)
  assert not np.allclose(a[:, 9:], b[:, 9:])


def test_every_parameter_has_logical_axis_names():
  model = tiny_decoder_model(remat=True)
  variables = model.get_initial_variables(jax.random.key(0), {"decoder_input_tokens": (2, 8)})
  leaves = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  allowed = {"embed", "mlp", "heads", "kv", "vocab", "relpos_buckets"}
  assert all(set(x.names) <= allowed for x in leaves)


def test_paper_stage_has_about_430m_parameters():
  layout = token_layout.PAPER
  for stage in token_layout.STAGE_NAMES:
    config = TransformerConfig(vocab_size=layout.stage(stage).vocab_size, emb_dim=1024,
                               num_heads=16, head_dim=64, mlp_dim=4096, num_layers=24)
    module = DecoderOnlyTransformer(config)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32),
                                                enable_dropout=False))
    count = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes["params"])))
    assert abs(count - 430e6) / 430e6 < 0.10, (stage, count)


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="num_layers"):
    TransformerConfig(num_layers=0)
  with pytest.raises(ValueError, match="dtype"):
    TransformerConfig(dtype="float8")
