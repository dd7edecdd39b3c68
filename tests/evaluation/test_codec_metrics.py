"""Codec metrics and losses: SI-SNR, mel distance, bitrate, hinge / feature / mel losses."""
import jax
import jax.numpy as jnp
import numpy as np

from musiclm_jax.codec import codec_losses
from musiclm_jax.evaluation import codec_metrics as metrics

RATE = 16000


def _tone(seconds=0.5, freq=440.0, batch=2):
  t = np.arange(int(seconds * RATE)) / RATE
  return jnp.asarray(np.stack([0.5 * np.sin(2 * np.pi * freq * (b + 1) * t)
                               for b in range(batch)]), jnp.float32)


def test_si_snr_is_scale_invariant_and_matches_a_known_snr():
  ref = _tone()
  assert float(jnp.min(metrics.si_snr(ref, ref))) > 60.0
  # Gain and DC offset are not errors (both near float32's precision limit, not infinite).
  assert float(jnp.min(metrics.si_snr(ref, 0.3 * ref + 0.01))) > 60.0
  noise = jax.random.normal(jax.random.key(0), ref.shape)
  # Noise scaled to exactly 10 dB below each reference; orthogonalised so the projection
  # onto the reference stays the reference itself.
  noise = noise - jnp.sum(noise * ref, -1, keepdims=True) / jnp.sum(ref * ref, -1,
                                                                      keepdims=True) * ref
  noise = noise * jnp.sqrt(jnp.sum(ref ** 2, -1, keepdims=True) / jnp.sum(noise ** 2, -1,
                                                                          keepdims=True) / 10.0)
  np.testing.assert_allclose(metrics.si_snr(ref, ref + noise), [10.0, 10.0], atol=0.05)


def test_mel_distance_is_zero_for_identical_audio_and_grows_with_noise():
  ref = _tone()
  assert float(jnp.max(metrics.mel_distance(ref, ref, RATE))) < 1e-6
  noise = jax.random.normal(jax.random.key(0), ref.shape)
  distances = [float(jnp.mean(metrics.mel_distance(ref, ref + level * noise, RATE)))
               for level in (0.001, 0.01, 0.1)]
  assert 0 < distances[0] < distances[1] < distances[2]


def test_bitrate_of_the_paper_and_tiny_layouts():
  assert metrics.bitrate(50, 12, 1024) == 6000.0      # MusicLM's SoundStream: 6 kbps
  assert metrics.bitrate(50, 4, 64) == 1200.0


def test_hinge_losses_on_known_logits():
  real = [(jnp.array([[2.0, 0.5]]), []), (jnp.array([[0.0]]), [])]
  fake = [(jnp.array([[-2.0, 0.0]]), []), (jnp.array([[1.0]]), [])]
  # Disc 0: real relu(1-2)=0, relu(1-.5)=.5 -> .25; fake relu(1-2)=0, relu(1)=1 -> .5.
  # Disc 1: real 1; fake relu(2) = 2.  Mean over discriminators: (.75 + 3) / 2.
  np.testing.assert_allclose(codec_losses.hinge_discriminator_loss(real, fake), 1.875)
  # Generator: disc 0: relu(3)=3, relu(1)=1 -> 2; disc 1: relu(0) = 0. Mean: 1.
  np.testing.assert_allclose(codec_losses.hinge_generator_loss(fake), 1.0)


def test_feature_matching_is_l1_and_only_pulls_the_fake_side():
  real = [(None, [jnp.ones((1, 4)), jnp.zeros((1, 2))])]
  fake = [(None, [jnp.zeros((1, 4)), jnp.ones((1, 2))])]
  np.testing.assert_allclose(codec_losses.feature_matching_loss(real, fake), 1.0)
  grad_real = jax.grad(lambda r: codec_losses.feature_matching_loss(
      [(None, [r])], [(None, [jnp.zeros((1, 4))])]))(jnp.ones((1, 4)))
  assert float(jnp.max(jnp.abs(grad_real))) == 0.0


def test_mel_loss_is_zero_when_equal_and_has_finite_gradients_near_silence():
  ref = _tone()
  assert float(codec_losses.multiscale_mel_loss(ref, ref, RATE)) < 1e-2
  loss_grad = jax.grad(lambda est: codec_losses.multiscale_mel_loss(ref, est, RATE))
  # |STFT| has no derivative at 0: exact silence must give a finite (zero) gradient, not NaN.
  assert bool(jnp.all(jnp.isfinite(loss_grad(jnp.zeros_like(ref)))))
  quiet = loss_grad(1e-4 * jax.random.normal(jax.random.key(0), ref.shape))
  assert bool(jnp.all(jnp.isfinite(quiet))) and float(jnp.max(jnp.abs(quiet))) > 0
  louder = codec_losses.multiscale_mel_loss(ref, 0.5 * ref, RATE)
  assert float(louder) > 1.0
