"""The codec's loss balancer: each weighted term sends its weight's share of the gradient into
the reconstruction, whatever the term's own scale, and the loss values stay as they were."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from musiclm_jax.codec import codec_losses, loss_balancer
from musiclm_jax.core.train_state import TrainState
from tests.soundstream_helpers import RATE, key, tiny_model, tones


def _per_example_norm(grad):
  return float(jnp.mean(jnp.sqrt(jnp.sum(jnp.square(grad), axis=-1))))


def test_each_term_sends_its_weight_as_gradient_norm_whatever_its_scale():
  reference = jnp.asarray(tones(2, 3200))
  estimate = 0.5 * jnp.roll(reference, 7, axis=-1)
  mel = lambda y: codec_losses.multiscale_mel_loss(reference, y, RATE)
  l1 = lambda y: codec_losses.waveform_l1_loss(reference, y)
  raw_mel, raw_l1 = jax.grad(mel)(estimate), jax.grad(l1)(estimate)
  # The premise: the raw terms' gradients differ by orders of magnitude.
  assert _per_example_norm(raw_mel) > 100 * _per_example_norm(raw_l1)

  balanced = jax.grad(lambda y: 3.0 * mel(loss_balancer.through(y, 3.0, True))
                      + 0.5 * l1(loss_balancer.through(y, 0.5, True)))(estimate)
  expected = (3.0 * raw_mel / _per_example_norm(raw_mel)
              + 0.5 * raw_l1 / _per_example_norm(raw_l1))
  np.testing.assert_allclose(balanced, expected, rtol=1e-4, atol=1e-7)
  # Scaling a term's loss leaves its share unchanged.
  scaled = jax.grad(lambda y: 1000.0 * l1(loss_balancer.through(y, 0.5, True)))(estimate)
  np.testing.assert_allclose(_per_example_norm(scaled), 0.5, rtol=1e-5)
  # Forward: an identity; without balancing, the gradient is untouched.
  np.testing.assert_array_equal(loss_balancer.through(estimate, 0.5, True), estimate)
  np.testing.assert_allclose(jax.grad(lambda y: l1(loss_balancer.through(y, 0.5, False)))(estimate),
                             raw_l1)


def _state(model, batch):
  variables = nn.meta.unbox(model.get_initial_variables(key(0), {"audio": batch["audio"].shape}))
  params = variables.pop("params")
  optimizer = model.make_optimizer(lambda: optax.sgd(0.0), None)
  return TrainState.create(params, optimizer.init(params), variables), optimizer


def test_soundstream_balancing_changes_the_gradient_not_the_logged_losses():
  batch = {"audio": jnp.asarray(tones(2, 3200))}
  weights = dict(adversarial_weight=3.0, feature_weight=3.0, waveform_weight=0.1,
                 stft_weight=1.0, discriminator_start_step=0)
  metrics = {}
  for balance in (False, True):
    model = tiny_model(balance_losses=balance, **weights)
    state, optimizer = _state(model, batch)
    metrics[balance] = jax.jit(lambda s, b, m=model, o=optimizer: m.train_step(
        s, b, key(1), o))(state, batch)[1]
  for name in ("reconstruction_loss", "waveform_loss", "stft_loss", "adversarial_loss",
               "feature_loss", "discriminator_loss", "generator_loss"):
    np.testing.assert_allclose(metrics[True][name], metrics[False][name], rtol=1e-5,
                               err_msg=name)
  np.testing.assert_allclose(metrics[True]["discriminator_grad_norm"],
                             metrics[False]["discriminator_grad_norm"], rtol=1e-5)
  assert not np.isclose(metrics[True]["generator_grad_norm"],
                        metrics[False]["generator_grad_norm"], rtol=1e-2)


def test_the_decoder_receives_the_weighted_sum_of_unit_norm_term_gradients():
  """Written out by hand: the decoder's gradient is the generator's pull-back of
  sum_i w_i g_i / ||g_i|| (the commitment term never reaches the decoder)."""
  batch = {"audio": jnp.asarray(tones(2, 3200))}
  weights = {"reconstruction_weight": 2.0, "waveform_weight": 0.1, "stft_weight": 1.0}
  model = tiny_model(balance_losses=True, adversarial_weight=0.0, feature_weight=0.0, **weights)
  state, _ = _state(model, batch)
  rng = key(3)
  grads = jax.grad(lambda p: model.loss_fn(p, batch, rng, state.model_state)[0])(state.params)

  wav = batch["audio"]
  codebooks = state.model_state["codebooks"]
  def reconstruct(generator):
    return model.generator.apply({"params": generator, "codebooks": codebooks}, wav, train=True,
                                 rngs={"quantizer": rng}, mutable=["codebooks"])[0][0]
  wav_hat, pull_back = jax.vjp(reconstruct, state.params["generator"])
  terms = {"reconstruction_weight": lambda y: codec_losses.multiscale_mel_loss(wav, y, RATE),
           "waveform_weight": lambda y: codec_losses.waveform_l1_loss(wav, y),
           "stft_weight": lambda y: codec_losses.multiresolution_stft_loss(wav, y)}
  cotangent = sum(weights[name] * jax.grad(term)(wav_hat)
                  / _per_example_norm(jax.grad(term)(wav_hat)) for name, term in terms.items())
  expected = pull_back(cotangent)[0]["decoder"]
  jax.tree.map(lambda got, want: np.testing.assert_allclose(
      got, want, rtol=2e-3, atol=1e-4 * float(jnp.max(jnp.abs(want)))),
               grads["generator"]["decoder"], expected)
