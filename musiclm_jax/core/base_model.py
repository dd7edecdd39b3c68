"""The model interface every trainable model of the project implements (t5x's, re-implemented).

A model turns a Flax module into the functions the trainer and `infer` call:
`get_initial_variables`, `loss_fn`, `eval_fn`, `predict_batch_with_aux`, `score_batch`, and the
trainer hooks `train_step` / `eval_step`. The default `train_step` does one optimizer step on
`loss_fn` with gradient accumulation; a model with several networks and optimizers (a GAN)
overrides it and keeps using the same trainer.
"""
import abc
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from musiclm_jax.core.train_state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class BaseModel(abc.ABC):
  """What the trainer needs from a model."""
  FEATURE_CONVERTER_CLS: type

  @abc.abstractmethod
  def get_initial_variables(self, rng, input_shapes: Mapping[str, tuple],
                            input_types: Optional[Mapping[str, Any]] = None) -> dict:
    """Variables with logically-partitioned (boxed) leaves: `{"params": ..., other...}`."""

  @abc.abstractmethod
  def loss_fn(self, params, batch: Batch, dropout_rng) -> tuple[jax.Array, Metrics]:
    ...

  def eval_fn(self, params, batch: Batch) -> tuple[jax.Array, Metrics]:
    return self.loss_fn(params, batch, dropout_rng=None)

  def predict_batch_with_aux(self, params, batch: Batch, rng=None, *, num_decodes: int = 1,
                             decoder_params: Optional[dict] = None,
                             return_all_decodes: bool = False):
    raise NotImplementedError(f"{type(self).__name__} does not generate")

  def score_batch(self, params, batch: Batch, return_intermediates: bool = False):
    raise NotImplementedError(f"{type(self).__name__} does not score")

  # --- trainer hooks -------------------------------------------------------------------------

  def make_optimizer(self, optimizer_fn: Callable, lr_schedule: Optional[optax.Schedule]
                     ) -> optax.GradientTransformation:
    """The run's optimizer from gin's `optimizer_fn` and schedule. A model with several
    networks returns e.g. `optax.multi_transform` over its parameter groups."""
    return optimizer_fn(lr_schedule) if lr_schedule is not None else optimizer_fn()

  def train_phase(self, step: int) -> Optional[str]:
    """The variant of `train_step` to run at (host-side) `step`: None, or a name the trainer
    passes back as `train_step(..., phase=name)`, compiling one step per phase. For a model
    whose computation changes partway through training (SoundStream's discriminators join
    late), so that no step pays for the parts it does not use."""
    del step
    return None

  def train_step(self, state: TrainState, batch: Batch, rng, optimizer: optax.GradientTransformation,
                 num_microbatches: int = 1) -> tuple[TrainState, Metrics]:
    """One optimizer step on the mean gradient of `num_microbatches` slices of the batch."""
    grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
    step_rng = jax.random.fold_in(rng, state.step)
    if num_microbatches <= 1:
      (loss, metrics), grads = grad_fn(state.params, batch, step_rng)
    else:
      loss, metrics, grads = _accumulate(grad_fn, state.params, batch, step_rng, num_microbatches)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              nonfinite_step=state.record_nonfinite(loss, grads, params))
    return new_state, metrics

  def eval_step(self, state: TrainState, batch: Batch) -> Metrics:
    loss, metrics = self.eval_fn(state.params, batch)
    return dict(metrics, loss=loss)


def _accumulate(grad_fn, params, batch, rng, num_microbatches):
  """Mean loss, metrics and gradients over microbatches, scanned to bound memory."""
  def split(x):
    if x.shape[0] % num_microbatches:
      raise ValueError(f"batch size {x.shape[0]} is not divisible by num_microbatches "
                       f"{num_microbatches}")
    # Strided rows, so each microbatch still spans every data-parallel device.
    return jnp.swapaxes(x.reshape(-1, num_microbatches, *x.shape[1:]), 0, 1)

  micro = jax.tree.map(split, batch)

  def body(carry, inputs):
    i, mb = inputs
    (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
    return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None

  zero_out = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rng)
  (loss0, metrics0), grads0 = zero_out
  init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (loss0, metrics0, grads0))
  total, _ = jax.lax.scan(body, init, (jnp.arange(num_microbatches), micro))
  return jax.tree.map(lambda x: x / num_microbatches, total)


def cross_entropy_with_z_loss(logits, targets, weights, z_loss: float):
  """Token-weighted mean cross-entropy; z_loss pulls log Z towards 0 for stable bf16 logits
  (PaLM / t5x). Returns (loss, metrics)."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  token_loss = log_z - target_logit + z_loss * jnp.square(log_z)
  num_tokens = jnp.maximum(jnp.sum(weights), 1.0)
  loss = jnp.sum(token_loss * weights) / num_tokens
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  metrics = {
      "accuracy": jnp.sum(correct * weights) / num_tokens,
      "z_loss": z_loss * jnp.sum(jnp.square(log_z) * weights) / num_tokens,
      "num_tokens": jnp.sum(weights),
  }
  return loss, metrics
