"""The waveform terms of the codec's reconstruction objective: time-domain L1 and the
multi-resolution STFT loss, and SoundStream adding them only when weighted."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from musiclm_jax.codec import codec_losses
from musiclm_jax.core.train_state import TrainState
from tests.soundstream_helpers import key, tiny_model, tones


def test_waveform_terms_are_zero_on_the_reference_and_see_phase_the_mel_loss_ignores():
  x = jnp.asarray(tones(2, 4096))
  assert float(codec_losses.waveform_l1_loss(x, x)) == 0.0
  assert float(codec_losses.multiresolution_stft_loss(x, x)) < 1e-5
  # Inverting the waveform keeps every STFT magnitude (so the mel and STFT terms cannot see
  # it) and is as wrong as a waveform gets for the time-domain term.
  assert float(codec_losses.multiresolution_stft_loss(x, -x)) < 1e-5
  np.testing.assert_allclose(codec_losses.waveform_l1_loss(x, -x), 2 * jnp.mean(jnp.abs(x)),
                             rtol=1e-6)
  assert float(codec_losses.multiresolution_stft_loss(x, 0.5 * x)) > 0.1
  grad = jax.grad(lambda y: codec_losses.multiresolution_stft_loss(x, y)
                  + codec_losses.waveform_l1_loss(x, y))(jnp.zeros_like(x))
  assert np.all(np.isfinite(np.asarray(grad)))


def test_soundstream_adds_the_waveform_terms_only_when_weighted():
  batch = {"audio": jnp.asarray(tones(2, 3200))}
  metrics = {}
  for weight in (0.0, 2.0):
    model = tiny_model(adversarial_weight=0.0, feature_weight=0.0, waveform_weight=weight,
                       stft_weight=weight)
    variables = nn.meta.unbox(model.get_initial_variables(key(0), {"audio": (2, 3200)}))
    params = variables.pop("params")
    optimizer = model.make_optimizer(lambda: optax.adam(1e-3), None)
    state = TrainState.create(params, optimizer.init(params), variables)
    metrics[weight] = jax.jit(lambda s, b, m=model, o=optimizer: m.train_step(
        s, b, key(1), o))(state, batch)[1]
  assert "waveform_loss" not in metrics[0.0] and "stft_loss" not in metrics[0.0]
  weighted = metrics[2.0]
  assert float(weighted["waveform_loss"]) > 0 and float(weighted["stft_loss"]) > 0
  np.testing.assert_allclose(
      weighted["generator_loss"],
      metrics[0.0]["generator_loss"] + 2.0 * (weighted["waveform_loss"] + weighted["stft_loss"]),
      rtol=1e-5)
