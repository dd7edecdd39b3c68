"""SoundStream's training: the codec as the trainer's model, a GAN over generator and
discriminators (Zeghidour et al., 2021, Sec. 3.4-3.5). The network is in `soundstream.py`.

Registered in gin as `soundstream.SoundStream`, next to the codec's configurables.
"""
import functools

import gin
import jax
import jax.numpy as jnp
import optax
import seqio

from musiclm_jax.codec import codec_losses, loss_balancer
from musiclm_jax.codec.discriminators import DiscriminatorConfig, Discriminators
from musiclm_jax.layers import rvq
from musiclm_jax.evaluation import codec_metrics
from musiclm_jax.core.base_model import BaseModel
from musiclm_jax.codec.soundstream import SoundStreamCodec, SoundStreamConfig
from musiclm_jax.core.train_state import TrainState


# The train phase (BaseModel.train_phase) of the steps before the discriminators join.
WARM_UP = "codec_warm_up"


@gin.configurable(module="soundstream")
class SoundStream(BaseModel):
  """The codec as the trainer's model: a GAN step over params `{"generator", "discriminator"}`
  and EMA codebooks in `TrainState.model_state["codebooks"]`.

  Generator loss (Sec. 3.5): reconstruction_weight * multi-scale mel + commitment_weight *
  commitment + waveform_weight * time-domain L1 + stft_weight * multi-resolution STFT (the two
  waveform terms keep the phase, which the mel loss leaves free; 0 leaves them out) +
  adversarial_weight * hinge + feature_weight * feature matching (the last two
  only from `discriminator_start_step` on, which lets the codec learn to reconstruct before
  the discriminators push it). Before that step the train step does not run the
  discriminators at all (`train_phase`), so the warm-up costs what a plain codec step costs.
  With both adversarial weights 0 they never run: a plain reconstruction-trained codec.
  `balance_losses` makes every weight except the commitment's a share of the gradient into the
  reconstruction rather than a multiplier of the term's own scale (`loss_balancer`).
  Batches: `{audio_feature: float32 [batch, samples]}`, samples a multiple of the hop.
  """
  FEATURE_CONVERTER_CLS = seqio.PassThroughFeatureConverter

  def __init__(self, config: SoundStreamConfig = SoundStreamConfig(),
               discriminator_config: DiscriminatorConfig = DiscriminatorConfig(),
               adversarial_weight: float = 1.0, feature_weight: float = 100.0,
               reconstruction_weight: float = 1.0, commitment_weight: float = 1.0,
               waveform_weight: float = 0.0, stft_weight: float = 0.0,
               balance_losses: bool = False, discriminator_start_step: int = 0,
               audio_feature: str = "audio"):
    self.config = config
    self.generator = SoundStreamCodec(config)
    self.discriminators = Discriminators(discriminator_config)
    self.adversarial_weight = adversarial_weight
    self.feature_weight = feature_weight
    self.reconstruction_weight = reconstruction_weight
    self.commitment_weight = commitment_weight
    self.waveform_weight = waveform_weight
    self.stft_weight = stft_weight
    self.balance_losses = balance_losses
    self.discriminator_start_step = discriminator_start_step
    self.audio_feature = audio_feature

  @property
  def uses_discriminators(self) -> bool:
    return self.adversarial_weight > 0 or self.feature_weight > 0

  def _audio(self, batch):
    if self.audio_feature not in batch:
      raise ValueError(f"SoundStream needs batch feature {self.audio_feature!r}; the batch has "
                       f"{sorted(batch)} (set SoundStream.audio_feature or fix the task)")
    wav = batch[self.audio_feature]
    if wav.ndim != 2 or wav.shape[1] % self.config.hop:
      raise ValueError(f"batch feature {self.audio_feature!r} has shape {wav.shape}; SoundStream "
                       f"needs [batch, samples] with samples a multiple of the hop "
                       f"{self.config.hop} (set the task's feature length accordingly)")
    return wav.astype(jnp.float32)

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    if self.audio_feature not in input_shapes:
      self._audio(input_shapes)  # raises, naming the feature
    # One example suffices: no parameter shape depends on the batch size.
    wav = self._audio({self.audio_feature: jnp.zeros(
        (1, *input_shapes[self.audio_feature][1:]), jnp.float32)})
    generator_rng, discriminator_rng = jax.random.split(rng)
    generator = self.generator.init({"params": generator_rng}, wav)
    discriminator = self.discriminators.init({"params": discriminator_rng}, wav)
    return {"params": {"generator": generator["params"],
                       "discriminator": discriminator["params"]},
            rvq.COLLECTION: generator[rvq.COLLECTION]}

  def make_optimizer(self, optimizer_fn, lr_schedule):
    """The run's optimizer twice, one per network, so Adam moments never mix them."""
    make = lambda: optimizer_fn(lr_schedule) if lr_schedule is not None else optimizer_fn()
    # A prefix tree of labels, not a function of the params: partitioning derives optimizer
    # shardings by initialising on placeholder params, which a labelling function cannot read.
    groups = ("generator", "discriminator")
    return optax.multi_transform({group: make() for group in groups},
                                 {group: group for group in groups})

  def _objective(self, params, codebooks, wav, rng, step, discriminate: bool = True):
    """Generator loss + discriminator loss, arranged so that one gradient serves both: each
    network sees the other through stop_gradient. Returns (total, (metrics, codebooks)).
    `discriminate=False` leaves the discriminators out (their gradient is zero) and reports
    their metrics as zeros, so both variants return the same tree."""
    (wav_hat, aux), updated = self.generator.apply(
        {"params": params["generator"], rvq.COLLECTION: codebooks}, wav, train=True,
        rngs={"quantizer": rng}, mutable=[rvq.COLLECTION])
    # What each weighted term reads: with balancing, its own normalising identity on wav_hat
    # (one per term: a shared one would normalise the terms' sum), so the term's weight is its
    # share of the gradient into wav_hat. The commitment term does not read wav_hat.
    heard = lambda weight: loss_balancer.through(wav_hat, weight, self.balance_losses)
    reconstruction = codec_losses.multiscale_mel_loss(wav, heard(self.reconstruction_weight),
                                                      self.config.sample_rate)
    commitment = aux["commitment_loss"]
    generator_loss = (self.reconstruction_weight * reconstruction
                      + self.commitment_weight * commitment)
    metrics = {"reconstruction_loss": reconstruction, "commitment_loss": commitment,
               **{f"rvq/{k}": v for k, v in aux["metrics"].items()}}
    if self.waveform_weight:
      waveform = codec_losses.waveform_l1_loss(wav, heard(self.waveform_weight))
      generator_loss += self.waveform_weight * waveform
      metrics["waveform_loss"] = waveform
    if self.stft_weight:
      stft = codec_losses.multiresolution_stft_loss(wav, heard(self.stft_weight))
      generator_loss += self.stft_weight * stft
      metrics["stft_loss"] = stft
    total = generator_loss
    if self.uses_discriminators and not discriminate:
      zero = jnp.zeros((), jnp.float32)
      metrics.update(adversarial_loss=zero, feature_loss=zero, discriminator_loss=zero,
                     discriminator_active=zero)
    elif self.uses_discriminators:
      active = (step >= self.discriminator_start_step).astype(jnp.float32)
      batch = wav.shape[0]
      both = self.discriminators.apply({"params": params["discriminator"]},
                                       jnp.concatenate([wav, jax.lax.stop_gradient(wav_hat)]))
      real = [(logits[:batch], [f[:batch] for f in feats]) for logits, feats in both]
      fake_detached = [(logits[batch:], [f[batch:] for f in feats]) for logits, feats in both]
      judge = functools.partial(self.discriminators.apply,
                                {"params": jax.lax.stop_gradient(params["discriminator"])})
      fake = judge(heard(self.adversarial_weight))
      # Balancing needs the two terms' gradients apart: a second pass over the fakes.
      fake_for_features = judge(heard(self.feature_weight)) if self.balance_losses else fake
      adversarial = codec_losses.hinge_generator_loss(fake)
      feature = codec_losses.feature_matching_loss(real, fake_for_features)
      discriminator_loss = codec_losses.hinge_discriminator_loss(real, fake_detached)
      generator_loss += active * (self.adversarial_weight * adversarial
                                  + self.feature_weight * feature)
      total = generator_loss + active * discriminator_loss
      metrics.update(adversarial_loss=adversarial, feature_loss=feature,
                     discriminator_loss=discriminator_loss, discriminator_active=active)
    metrics["generator_loss"] = generator_loss
    return total, (metrics, updated[rvq.COLLECTION])

  def loss_fn(self, params, batch, dropout_rng, model_state=None, step=0):
    """The training objective; SoundStream also needs its codebooks (`model_state`)."""
    if model_state is None:
      raise ValueError("SoundStream.loss_fn needs model_state={'codebooks': ...}: the RVQ "
                       "codebooks are EMA state, not parameters")
    rng = dropout_rng if dropout_rng is not None else jax.random.key(0)
    loss, (metrics, _) = self._objective(params, model_state[rvq.COLLECTION], self._audio(batch),
                                         rng, jnp.asarray(step))
    return loss, metrics

  def train_phase(self, step: int):
    """WARM_UP before the discriminators join: a step compiled without them, since a
    traced switch (`lax.cond`) runs several times slower than either branch on XLA:CPU."""
    if self.uses_discriminators and step < self.discriminator_start_step:
      return WARM_UP
    return None

  def train_step(self, state: TrainState, batch, rng, optimizer, num_microbatches: int = 1,
                 phase=None):
    """One generator + discriminator update; the codebooks' EMA update goes to model_state.
    `phase=WARM_UP` (train_phase) is the codec-only step; without a phase the discriminators
    run and a traced mask keeps them out before `discriminator_start_step`."""
    wav = self._audio(batch)
    step_rng = jax.random.fold_in(rng, state.step)
    codebooks = state.model_state[rvq.COLLECTION]
    grad_fn = jax.value_and_grad(
        functools.partial(self._objective, discriminate=phase != WARM_UP), has_aux=True)
    if num_microbatches <= 1:
      (loss, (metrics, codebooks)), grads = grad_fn(state.params, codebooks, wav, step_rng,
                                                    state.step)
    else:
      loss, metrics, codebooks, grads = _accumulate(grad_fn, state, codebooks, wav, step_rng,
                                                    num_microbatches)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    metrics = dict(metrics, loss=loss,
                   generator_grad_norm=optax.tree.norm(grads["generator"]),
                   discriminator_grad_norm=optax.tree.norm(grads["discriminator"]))
    params = optax.apply_updates(state.params, updates)
    model_state = dict(state.model_state, **{rvq.COLLECTION: codebooks})
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state,
        nonfinite_step=state.record_nonfinite(loss, grads, params, model_state))
    return new_state, metrics

  def eval_fn(self, params, batch, model_state=None):
    if model_state is None:
      raise ValueError("SoundStream.eval_fn needs model_state={'codebooks': ...}")
    wav = self._audio(batch)
    wav_hat, aux = self.generator.apply(
        {"params": params["generator"], rvq.COLLECTION: model_state[rvq.COLLECTION]}, wav)
    reconstruction = codec_losses.multiscale_mel_loss(wav, wav_hat, self.config.sample_rate)
    metrics = {
        "reconstruction_loss": reconstruction,
        "si_snr_db": jnp.mean(codec_metrics.si_snr(wav, wav_hat)),
        "mel_distance": jnp.mean(codec_metrics.mel_distance(wav, wav_hat,
                                                            self.config.sample_rate)),
        "bitrate_bps": jnp.asarray(self.config.bitrate(), jnp.float32),
        **{f"rvq/{k}": v for k, v in aux["metrics"].items()}}
    return reconstruction, metrics

  def eval_step(self, state: TrainState, batch):
    loss, metrics = self.eval_fn(state.params, batch, state.model_state)
    return dict(metrics, loss=loss)


def _accumulate(grad_fn, state, codebooks, wav, rng, num_microbatches):
  """Mean loss, metrics and gradients over microbatches; the codebooks' EMA steps once per
  microbatch, in order, as if the microbatches were consecutive batches."""
  if wav.shape[0] % num_microbatches:
    raise ValueError(f"batch size {wav.shape[0]} is not divisible by num_microbatches "
                     f"{num_microbatches}")
  # Strided rows, so each microbatch still spans every data-parallel device.
  micro = jnp.swapaxes(wav.reshape(-1, num_microbatches, wav.shape[1]), 0, 1)
  (loss0, (metrics0, _)), grads0 = jax.eval_shape(grad_fn, state.params, codebooks, micro[0],
                                                  rng, state.step)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss0, metrics0, grads0))

  def body(carry, inputs):
    codebooks, total = carry
    i, mb = inputs
    (loss, (metrics, codebooks)), grads = grad_fn(state.params, codebooks, mb,
                                                  jax.random.fold_in(rng, i), state.step)
    return (codebooks, jax.tree.map(jnp.add, total, (loss, metrics, grads))), None

  (codebooks, total), _ = jax.lax.scan(body, (codebooks, zeros),
                                       (jnp.arange(num_microbatches), micro))
  loss, metrics, grads = jax.tree.map(lambda x: x / num_microbatches, total)
  return loss, metrics, codebooks, grads
