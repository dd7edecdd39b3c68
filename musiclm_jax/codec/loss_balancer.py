"""Loss balancing for the codec's generator (EnCodec, Défossez et al. 2022, Sec. 3.4): each
term's weight becomes the share of the gradient it sends into the reconstructed waveform,
whatever the term's own scale.

The codec's terms differ in scale by orders of magnitude (the multi-scale mel loss is in the
thousands on full-scale audio, the time-domain L1 near 0.05), so raw weights would have to be
re-tuned whenever a crop length, a sample rate or a window changes. With balancing, term i
sends `weight_i * g_i / ||g_i||` back into the generator's output, `g_i` its gradient with
respect to that output and `||g_i||` the per-example L2 norm averaged over the batch.
EnCodec smooths that norm with an EMA over steps; here each step's own norm is used, which
keeps the train step stateless (the shares are what the weights say on every step).

Only the gradient changes: the loss values (and what the trainer logs) are the weighted sums
as without balancing.
"""
import functools

import jax
import jax.numpy as jnp

_EPS = 1e-12


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def scaled_unit_gradient(wav: jax.Array, share: float) -> jax.Array:
  """Identity on `[batch, samples]` whose backward pass rescales the incoming gradient to
  norm `share` (per-example L2 norm, averaged over the batch)."""
  return wav


def _forward(wav, share):
  del share
  return wav, None


def _backward(share, _, grad):
  # The incoming gradient already carries the term's weight, which the normalisation
  # removes; `share` puts it back as the term's share.
  norm = jnp.mean(jnp.sqrt(jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))))
  return (share * grad / (norm + _EPS),)


scaled_unit_gradient.defvjp(_forward, _backward)


def through(wav: jax.Array, weight: float, balance: bool) -> jax.Array:
  """What a loss term weighted by `weight` should read: the generator's output, with the
  gradient it sends back rescaled to norm `weight` when balancing."""
  return scaled_unit_gradient(wav, float(weight)) if balance else wav
