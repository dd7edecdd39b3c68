"""The flash path (JAX's Pallas TPU kernel, interpreted on CPU) equals the reference attention:
values and gradients with padding, a bidirectional prefix, packed segments and the relative
position bias, over a length the kernel pads to its 128-position tiles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.layers.flash_attention import (attention_bias, block_size_for, flash_attention,
                                                padded_length)
from musiclm_jax.layers.relative_position import RelativePositionBiases
from tests.layers.test_blockwise_attention import (HEADS, LENGTH, _token_mask,
                                                    assert_equals_reference)


def _flash(query, key, value, table, token_mask):
  relpos = RelativePositionBiases(HEADS, 32, 128, bidirectional=False)
  offsets = jnp.arange(-128, 129)[None, :]
  bias = relpos.apply({"params": {"rel_embedding": table}}, jnp.zeros((1, 1), jnp.int32),
                      offsets)[0, :, 0, :]
  ab = attention_bias(bias, token_mask, jnp.float32)
  return flash_attention(query, key, value, ab, block_size=512)


def test_flash_equals_reference_values_and_gradients():
  assert_equals_reference(jax.jit(_flash))


def test_bias_masks_padding_past_the_length():
  token_mask = _token_mask()
  ab = attention_bias(jnp.zeros((HEADS, 257)), token_mask, jnp.float32)
  assert ab.shape == (2, HEADS, 128, 128)
  allowed = np.asarray(ab) > -1.0
  assert not allowed[:, :, :, LENGTH:].any() and not allowed[:, :, LENGTH:, :].any()
  np.testing.assert_array_equal(allowed[:, 0, :LENGTH, :LENGTH], np.asarray(token_mask.dense())[:, 0])


@pytest.mark.parametrize("padded, preferred, block", [
    (128, 512, 128), (2304, 512, 256), (2560, 512, 512), (1024, 256, 256), (384, 1024, 128)])
def test_block_is_the_largest_tile_that_divides(padded, preferred, block):
  assert block_size_for(padded, preferred) == block
  assert padded_length(2250) == 2304 and padded_length(128) == 128
