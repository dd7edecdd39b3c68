"""Conformer layers and the conv-subsampling front end."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.layers.conformer import ConformerStack, ConvolutionModule
from musiclm_jax.layers.conv_subsampling import ConvSubsampling
from tests.w2v_bert_helpers import tiny_model


def _stack(**overrides):
  kwargs = dict(num_layers=2, num_heads=2, head_dim=8, mlp_dim=32, conv_kernel_size=5)
  kwargs.update(overrides)
  return ConformerStack(**kwargs)


def _init(module, x, **kwargs):
  # Under jit: op-by-op Flax init and apply are several times slower on CPU.
  return jax.jit(functools.partial(module.init, **kwargs))(jax.random.key(1), x)


def _apply(module, variables, x, **kwargs):
  return jax.jit(functools.partial(module.apply, **kwargs))(variables, x)


def test_every_w2v_bert_parameter_has_one_logical_name_per_axis():
  model = tiny_model()
  variables = jax.eval_shape(
      lambda: model.get_initial_variables(jax.random.key(0), {"audio": (2, 1600)}))
  leaves = jax.tree.leaves(variables["params"], is_leaf=lambda p: isinstance(p, nn.Partitioned))
  assert leaves and all(isinstance(p, nn.Partitioned) for p in leaves)
  assert all(len(p.names) == p.value.ndim for p in leaves)


def test_stack_returns_every_layer_and_stops_early_on_request():
  stack = _stack()
  x = jax.random.normal(jax.random.key(0), (2, 11, 16))
  variables = _init(stack, x, deterministic=True)
  full = _apply(stack, variables, x, deterministic=True)
  first = _apply(stack, variables, x, deterministic=True, num_layers_to_run=1)
  assert len(full) == 2 and len(first) == 1 and full[-1].shape == (2, 11, 16)
  np.testing.assert_allclose(first[0], full[0], rtol=1e-6)
  with pytest.raises(ValueError, match="num_layers_to_run=3"):
    stack.apply(variables, x, deterministic=True, num_layers_to_run=3)


def test_remat_changes_memory_not_results():
  x = jax.random.normal(jax.random.key(0), (2, 7, 16))
  plain, remat = _stack(num_layers=1), _stack(num_layers=1, remat=True)
  params = nn.meta.unbox(_init(plain, x, deterministic=True)["params"])
  # Random weights: a plain sum of a LayerNorm output is ~0 and would compare only rounding.
  weights = jax.random.normal(jax.random.key(2), x.shape)
  loss = lambda module: lambda p: jnp.sum(
      weights * module.apply({"params": p}, x, deterministic=True)[-1])
  value_and_grad = lambda module: jax.jit(jax.value_and_grad(loss(module)))(params)
  remat_loss, remat_grads = value_and_grad(remat)
  plain_loss, plain_grads = value_and_grad(plain)
  np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(plain_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_convolution_module_reads_only_its_kernel_neighbourhood():
  module = ConvolutionModule(kernel_size=5)
  x = jax.random.normal(jax.random.key(0), (1, 20, 8))
  variables = _init(module, x, deterministic=True)
  # A random vector, not a constant: the module's LayerNorm would remove a constant shift.
  changed = x.at[0, 10].add(jax.random.normal(jax.random.key(2), (8,)))
  diff = np.abs(np.asarray(_apply(module, variables, changed, deterministic=True)
                           - _apply(module, variables, x, deterministic=True))).sum(-1)[0]
  assert set(np.nonzero(diff > 1e-6)[0]) == {8, 9, 10, 11, 12}


def test_dropout_is_active_only_when_not_deterministic():
  stack = _stack(dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(0), (2, 7, 16))
  variables = _init(stack, x, deterministic=True)
  run = jax.jit(lambda seed, det: stack.apply(variables, x, deterministic=det,
                                              rngs={"dropout": jax.random.key(seed)})[-1],
                static_argnums=1)
  np.testing.assert_array_equal(run(0, True), run(1, True))
  assert not np.allclose(run(0, False), run(1, False))


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 8, 9, 100])
def test_conv_subsampling_is_four_times_with_ceil(frames):
  module = ConvSubsampling(emb_dim=16, channels=4)
  log_mel = jnp.zeros((2, frames, 80))
  shapes = jax.eval_shape(lambda: module.init_with_output(jax.random.key(0), log_mel)[0])
  assert shapes.shape == (2, math.ceil(frames / 4), 16)
