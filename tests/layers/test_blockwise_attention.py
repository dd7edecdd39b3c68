"""The blockwise attention path equals the reference one: values and gradients, with padding,
a bidirectional prefix, packed segments, the relative position bias and a ragged last block."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.layers.blockwise_attention import NEG_INF, TokenMask, blockwise_attention
from musiclm_jax.layers.relative_position import RelativePositionBiases
from musiclm_jax.stages.transformer import DecoderOnlyTransformer
from tests.helpers import tiny_decoder_model, tiny_transformer_config

LENGTH, HEADS, HEAD_DIM = 37, 3, 8


def _token_mask():
  valid = np.ones((2, LENGTH), bool)
  valid[1, -9:] = False                      # padding at the end of the second example
  prefix = np.zeros((2, LENGTH), bool)
  prefix[0, :10], prefix[1, :5] = True, True
  segments = np.ones((2, LENGTH), np.int32)
  segments[0, 20:] = 2                       # two packed sequences in the first example
  return TokenMask(jnp.asarray(valid), jnp.asarray(prefix), jnp.asarray(segments))


def _reference(query, key, value, table, token_mask):
  relpos = RelativePositionBiases(HEADS, 32, 128, bidirectional=False)
  positions = jnp.arange(LENGTH)[None, :]
  bias = relpos.apply({"params": {"rel_embedding": table}}, positions, positions)
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) + bias
  logits = jnp.where(token_mask.dense(), logits, NEG_INF)
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), value)


def _blockwise(query, key, value, table, token_mask, block_size):
  relpos = RelativePositionBiases(HEADS, 32, 128, bidirectional=False)
  bias = relpos.apply({"params": {"rel_embedding": table}}, jnp.full((1, 1), LENGTH - 1),
                      jnp.arange(2 * LENGTH - 1)[None, :])[0, :, 0, :]
  return blockwise_attention(query, key, value, bias, token_mask, block_size=block_size)


def assert_equals_reference(attend):
  """`attend(query, key, value, table, token_mask)` gives the reference path's values and
  gradients (query, key, value and the bias table) on the valid positions of a random case."""
  keys = jax.random.split(jax.random.key(0), 5)
  query, key, value = (jax.random.normal(k, (2, LENGTH, HEADS, HEAD_DIM)) for k in keys[:3])
  table = jax.random.normal(keys[3], (HEADS, 32))
  token_mask = _token_mask()
  # Padding queries are ignored by the loss (their rows are uniform averages in both paths).
  weight = jax.random.normal(keys[4], query.shape) * token_mask.valid[:, :, None, None]

  def loss(fn, *args):
    return jnp.sum(fn(*args, token_mask) * weight)

  ref = _reference(query, key, value, table, token_mask)
  out = attend(query, key, value, table, token_mask)
  valid = np.asarray(token_mask.valid)
  np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(ref)[valid], atol=1e-5, rtol=1e-5)
  ref_grads = jax.grad(lambda *a: loss(_reference, *a), argnums=(0, 1, 2, 3))(
      query, key, value, table)
  grads = jax.grad(lambda *a: loss(attend, *a), argnums=(0, 1, 2, 3))(query, key, value, table)
  for name, g, r in zip(("query", "key", "value", "bias table"), grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("block_size", [8, 16, 64])
def test_blockwise_equals_reference_values_and_gradients(block_size):
  assert_equals_reference(functools.partial(_blockwise, block_size=block_size))


def test_dropout_drops_weights_and_keeps_the_mean():
  keys = jax.random.split(jax.random.key(1), 4)
  query, key, value = (jax.random.normal(k, (2, LENGTH, HEADS, HEAD_DIM)) for k in keys[:3])
  bias = jnp.zeros((HEADS, 2 * LENGTH - 1))
  token_mask = _token_mask()
  plain = blockwise_attention(query, key, value, bias, token_mask, block_size=16)
  # One compiled function for the 64 draws: op by op, the loop took two minutes.
  dropped = jax.jit(lambda rng: blockwise_attention(query, key, value, bias, token_mask,
                                                    block_size=16, dropout_rate=0.5,
                                                    dropout_rng=rng))
  runs = [dropped(jax.random.key(i)) for i in range(64)]
  assert not np.allclose(runs[0], plain)
  # Unbiased: each output's mean over the runs is within its standard error of no dropout.
  valid = np.asarray(token_mask.valid)
  runs = np.stack(runs)[:, valid]
  z = (runs.mean(axis=0) - np.asarray(plain)[valid]) / (runs.std(axis=0) / np.sqrt(64) + 1e-6)
  assert np.mean(np.abs(z) < 4) > 0.99 and abs(np.mean(z)) < 0.2, np.mean(z)


def _stage_batch():
  rng = np.random.default_rng(0)
  ids = rng.integers(2, 64, (3, 40))
  ids[2, 30:] = 0  # padding
  inputs = np.concatenate([np.zeros((3, 1), ids.dtype), ids[:, :-1]], axis=1)
  causal = (np.arange(40)[None, :] <= np.array([[6], [12], [3]])).astype(np.int32)
  return dict(decoder_input_tokens=jnp.asarray(inputs), decoder_target_tokens=jnp.asarray(ids),
              decoder_causal_attention=jnp.asarray(causal))


@pytest.mark.parametrize("path", [
    dict(attention="blockwise", attention_block_size=16),
    dict(attention="flash"),
    dict(attention="flash", scan_layers=True, remat="dots_saveable"),
])
def test_stage_transformer_loss_and_gradients_match_across_attention_paths(path):
  batch = _stage_batch()
  reference = DecoderOnlyTransformer(tiny_transformer_config(scan_layers=path.get("scan_layers",
                                                                                 False)))
  blockwise = DecoderOnlyTransformer(tiny_transformer_config(**path))
  params = nn.meta.unbox(reference.init(jax.random.key(0), batch["decoder_input_tokens"],
                                        enable_dropout=False)["params"])
  weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)

  def loss(module, p):
    logits = module.apply({"params": p}, batch["decoder_input_tokens"],
                          batch["decoder_target_tokens"],
                          decoder_causal_attention=batch["decoder_causal_attention"],
                          enable_dropout=False)
    log_probs = jax.nn.log_softmax(logits)
    picked = jnp.take_along_axis(log_probs, batch["decoder_target_tokens"][..., None], -1)[..., 0]
    return -jnp.sum(picked * weights) / jnp.sum(weights)

  ref_loss, ref_grads = jax.value_and_grad(lambda p: loss(reference, p))(params)
  new_loss, new_grads = jax.value_and_grad(lambda p: loss(blockwise, p))(params)
  np.testing.assert_allclose(new_loss, ref_loss, rtol=1e-5)
  flat_ref = jax.tree_util.tree_leaves_with_path(ref_grads)
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(new_grads),
                          (leaf for _, leaf in flat_ref)):
    np.testing.assert_allclose(g, r, atol=2e-5, rtol=1e-4, err_msg=jax.tree_util.keystr(path))


def test_unknown_attention_path_is_refused():
  with pytest.raises(ValueError, match="attention must be 'reference', 'blockwise' or 'flash'"):
    tiny_transformer_config(attention="splash")


@pytest.mark.parametrize("remat", ["none", "full", "dots_saveable"])
def test_scanned_layers_give_the_loss_and_gradients_of_the_loop(remat):
  batch = _stage_batch()
  loop = DecoderOnlyTransformer(tiny_transformer_config(num_layers=3))
  scanned = DecoderOnlyTransformer(tiny_transformer_config(num_layers=3, scan_layers=True,
                                                           remat=remat))
  params = nn.meta.unbox(loop.init(jax.random.key(0), batch["decoder_input_tokens"],
                                   enable_dropout=False)["params"])
  stacked = {k: v for k, v in params.items() if not k.startswith("layers_")}
  stacked["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                   *[params[f"layers_{i}"] for i in range(3)])
  scanned_shapes = jax.eval_shape(functools.partial(scanned.init, enable_dropout=False),
                                  jax.random.key(0), batch["decoder_input_tokens"])["params"]
  assert jax.tree.map(lambda x: x.shape, nn.meta.unbox(scanned_shapes)) == \
      jax.tree.map(lambda x: x.shape, stacked)

  def loss(module, p):
    logits = module.apply({"params": p}, batch["decoder_input_tokens"],
                          batch["decoder_target_tokens"],
                          decoder_causal_attention=batch["decoder_causal_attention"],
                          enable_dropout=False)
    return jnp.mean(jax.nn.logsumexp(logits, -1) * (batch["decoder_target_tokens"] > 0))

  ref_loss, ref_grads = jax.value_and_grad(lambda p: loss(loop, p))(params)
  new_loss, new_grads = jax.value_and_grad(lambda p: loss(scanned, p))(stacked)
  np.testing.assert_allclose(new_loss, ref_loss, rtol=1e-5)
  ref_stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                             *[ref_grads[f"layers_{i}"] for i in range(3)])
  for a, b in zip(jax.tree.leaves(new_grads["layers"]), jax.tree.leaves(ref_stacked)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-4)


def test_scanned_blockwise_model_samples_like_the_loop():
  loop = tiny_decoder_model(num_layers=2)
  scanned = tiny_decoder_model(num_layers=2, scan_layers=True, attention="blockwise",
                               attention_block_size=4, remat="full")
  batch = {k: v[:2, :12] for k, v in _stage_batch().items()}
  params = nn.meta.unbox(loop.get_initial_variables(
      jax.random.key(0), {"decoder_input_tokens": (2, 12)})["params"])
  stacked = {k: v for k, v in params.items() if not k.startswith("layers_")}
  stacked["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), params["layers_0"],
                                   params["layers_1"])
  prompt = {**batch, "decoder_causal_attention": batch["decoder_causal_attention"]}
  out_loop = loop.predict_batch_with_aux(params, prompt, jax.random.key(3))[0]
  out_scan = scanned.predict_batch_with_aux(stacked, prompt, jax.random.key(3))[0]
  np.testing.assert_array_equal(out_loop, out_scan)
