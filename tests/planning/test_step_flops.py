"""Matmul FLOPs of a step count every loop trip (XLA's cost_analysis counts one)."""
import jax
import jax.numpy as jnp
import pytest

from musiclm_jax.planning import step_flops

X, W = jnp.ones((8, 16)), jnp.ones((5, 16, 16))
ANALYTIC = 5 * 3 * 2 * 8 * 16 * 16  # 5 steps x (forward + 2 backward) matmuls


def _grad(unroll: int, remat: bool = False):
  def f(x, w):
    def body(c, wi):
      return jnp.tanh(c @ wi), None
    body = jax.checkpoint(body) if remat else body
    return jnp.sum(jax.lax.scan(body, x, w, unroll=unroll)[0])
  return jax.grad(f, argnums=(0, 1))


def test_a_scan_counts_every_trip_and_xla_does_not():
  assert step_flops.count(_grad(1), X, W) == ANALYTIC
  assert step_flops.count(_grad(5), X, W) == ANALYTIC
  cost = jax.jit(_grad(1)).lower(X, W).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert cost["flops"] < ANALYTIC / 2  # what the planner reported before


def test_rematerialised_code_counts_its_recomputation():
  assert step_flops.count(_grad(1, remat=True), X, W) == ANALYTIC + 5 * 2 * 8 * 16 * 16


def test_convolutions_count_kernel_times_input_features():
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  assert step_flops.count(conv, jnp.ones((2, 32, 4)), jnp.ones((3, 4, 6))) == 2 * 2 * 32 * 6 * 3 * 4


def test_a_loop_of_unknown_length_is_refused():
  def until(x):
    return jax.lax.while_loop(lambda c: jnp.sum(c) < 100.0, lambda c: c @ jnp.ones((4, 4)), x)
  with pytest.raises(step_flops.UnknownTripCount):
    step_flops.count(until, jnp.ones((4, 4)))


def test_a_pallas_kernel_counts_its_block_body_over_the_grid():
  from musiclm_jax.layers.blockwise_attention import TokenMask
  from musiclm_jax.layers.flash_attention import attention_bias, flash_attention
  batch, length, heads, head_dim = 2, 256, 2, 64
  query = jnp.ones((batch, length, heads, head_dim))
  ab = attention_bias(jnp.zeros((heads, 257)), TokenMask(jnp.ones((batch, length), bool)),
                      jnp.float32)
  flops = step_flops.count(lambda q, b: flash_attention(q, q, q, b, block_size=128), query, ab)
  assert flops == 4 * batch * heads * length * length * head_dim  # scores and values, once


def test_a_shard_map_counts_its_body_on_every_device():
  # Traced only: an abstract mesh of 4 devices needs no devices.
  mesh = jax.sharding.AbstractMesh((4,), ("data",))
  matmul = jax.shard_map(lambda a: a @ jnp.ones((16, 16)), mesh=mesh,
                         in_specs=jax.sharding.PartitionSpec("data"),
                         out_specs=jax.sharding.PartitionSpec("data"))
  assert step_flops.count(matmul, jnp.ones((8, 16))) == 2 * 8 * 16 * 16
