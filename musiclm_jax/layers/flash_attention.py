"""Attention through JAX's Pallas TPU flash-attention kernel (`pallas.ops.tpu.flash_attention`).

The kernel takes any additive bias `ab [batch, heads, q, k]` and differentiates through it, so
T5's relative position bias and the prefix-LM / padding / packing mask arrive as one array,
built once per forward by the Transformer (`attention_bias`) and shared by every layer — T5's
own habit of one bias for the whole stack. Splash attention would skip masked blocks, but it
takes no additive bias and only masks fixed at trace time, so neither a learned bias nor a
per-example prefix fits it. The kernel never holds T x T scores per layer; what remains T x T
is this one bias per forward (and its gradient in the backward pass).

On a backend other than TPU the same kernel runs interpreted, slow but exact: that is how the
tests compare it with the reference attention on CPU. Pallas's generic interpreter (a
pallas_call's `interpret=True`) lowers the kernel body to plain XLA ops, grid loop included.
The Mosaic TPU interpreter (`pltpu.InterpretParams`) would also simulate TPU memory, through
`io_callback`s that run JAX ops on the host: those deadlocked on a 2-core CPU under a test
suite's load, and remat refuses their effects.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

from musiclm_jax.layers.blockwise_attention import TokenMask
from musiclm_jax.layers.relative_position import bias_from_table

NEG_INF = -1e10  # as the other paths: a fully masked row averages the values, not NaN
_LANES = 128     # TPU tiles: kernel blocks are multiples of 128 positions


def padded_length(length: int) -> int:
  return -(-length // _LANES) * _LANES


def block_size_for(padded: int, preferred: int) -> int:
  """The largest block of 128 * 2^k positions, at most `preferred`, that divides `padded`."""
  block = _LANES
  while block * 2 <= preferred and padded % (block * 2) == 0:
    block *= 2
  return block


def attention_bias(relative_bias, token_mask: TokenMask, dtype) -> jax.Array:
  """`[batch, heads, P, P]` (P = length padded to 128): the position bias of every pair plus
  NEG_INF where the mask forbids it (padding past the length included)."""
  length = token_mask.valid.shape[-1]
  padded = padded_length(length)
  positions = jnp.arange(padded)[None, :]
  bias = bias_from_table(relative_bias, positions, positions).astype(dtype)  # [1, h, P, P]
  pad = [(0, 0), (0, padded - length)]
  allowed = TokenMask(
      jnp.pad(token_mask.valid, pad),
      None if token_mask.prefix is None else jnp.pad(token_mask.prefix, pad),
      None if token_mask.segment_ids is None else jnp.pad(token_mask.segment_ids, pad),
  ).dense()  # [b, 1, P, P]
  ab = jnp.where(allowed, bias, jnp.asarray(NEG_INF, dtype))
  return nn.with_logical_constraint(ab, ("activation_batch", "activation_heads", None, None))


def _on_tpu() -> bool:
  """Whether this trace is for TPU: the mesh in use (an ahead-of-time plan compiles for TPU
  from a CPU host) or else the default backend."""
  device = jax.sharding.get_abstract_mesh().abstract_device
  return (device.platform if device is not None else jax.default_backend()) == "tpu"


def _kernel(query, key, value, ab, block: int):
  sizes = tpu_flash.BlockSizes(
      block_q=block, block_k_major=block, block_k=block, block_b=1,
      block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block, block_q_dkv=block,
      block_k_major_dq=block, block_k_dq=block, block_q_dq=block)
  # The query arrives scaled by 1/sqrt(head_dim), as in the other paths.
  return tpu_flash.flash_attention(query, key, value, ab, sm_scale=1.0, block_sizes=sizes)


def _interpret_mode():
  # True (not InterpretParams) selects the generic HLO interpreter: see the module docstring.
  return pltpu.force_tpu_interpret_mode(True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _interpreted(query, key, value, ab, block: int):
  with _interpret_mode():
    return _kernel(query, key, value, ab, block)


def _interpreted_fwd(query, key, value, ab, block):
  # Interpret mode applies to kernels traced under it, and the kernel's backward is traced
  # later, by the transpose: keep its VJP (a pytree) and trace it under the mode again.
  with _interpret_mode():
    out, vjp = jax.vjp(functools.partial(_kernel, block=block), query, key, value, ab)
  return out, vjp


def _interpreted_bwd(block, vjp, cotangent):
  del block
  with _interpret_mode():
    return vjp(cotangent)


_interpreted.defvjp(_interpreted_fwd, _interpreted_bwd)


def flash_attention(query, key, value, ab, *, block_size: int = 512) -> jax.Array:
  """`[batch, length, heads, head_dim]` attention of a query already scaled by
  1/sqrt(head_dim); `ab` from `attention_bias` (its padded length fixes the kernel's)."""
  length, padded = query.shape[1], ab.shape[-1]
  block = block_size_for(padded, block_size)

  def heads_first(x):  # the kernel's layout, [batch, heads, P, head_dim]
    return jnp.swapaxes(jnp.pad(x, [(0, 0), (0, padded - length), (0, 0), (0, 0)]), 1, 2)

  args = (heads_first(query), heads_first(key), heads_first(value), ab.astype(query.dtype))
  kernel = _kernel if _on_tpu() else _interpreted
  run = lambda *arrays: kernel(*arrays, block)  # noqa: E731 (block stays static)
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    # XLA cannot partition a Mosaic kernel: each device runs it on its own examples and
    # heads, as the logical rules shard them (the length axis whole, as the kernel needs).
    batch_axes, head_axes = nn.logical_to_mesh_axes(("activation_batch", "activation_heads"))
    spec = jax.sharding.PartitionSpec(batch_axes, head_axes, None, None)
    run = jax.shard_map(run, mesh=mesh, in_specs=(spec,) * 4, out_specs=spec, check_vma=False)
  return jnp.swapaxes(run(*args), 1, 2)[:, :length]
