"""Optimizers and learning-rate schedules, configured in gin (`optimizers.create.*`)."""
import gin
import optax

_SCHEDULES = ("constant", "cosine", "rsqrt", "linear")


@gin.configurable(module="optimizers")
def schedule(learning_rate: float = 1e-3, warmup_steps: int = 0, decay: str = "cosine",
             total_steps: int = gin.REQUIRED, end_factor: float = 0.0) -> optax.Schedule:
  """Linear warm-up then `decay`: constant, cosine / linear down to `end_factor`, or T5's
  inverse square root (continues from the warm-up peak)."""
  if decay not in _SCHEDULES:
    raise ValueError(f"optimizers.schedule.decay={decay!r}; expected one of {_SCHEDULES}")
  decay_steps = max(total_steps - warmup_steps, 1)
  if decay == "constant":
    after = optax.constant_schedule(learning_rate)
  elif decay == "cosine":
    after = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=end_factor)
  elif decay == "linear":
    after = optax.linear_schedule(learning_rate, learning_rate * end_factor, decay_steps)
  else:
    warm = max(warmup_steps, 1)
    after = lambda step: learning_rate * (warm / (step + warm)) ** 0.5
  if warmup_steps <= 0:
    return after
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


@gin.configurable(module="optimizers")
def create(lr_schedule: optax.Schedule, name: str = "adamw", b1: float = 0.9, b2: float = 0.98,
           weight_decay: float = 0.0, clip_norm: float = 1.0) -> optax.GradientTransformation:
  """Global-norm clipping (clip_norm <= 0 disables it) then the named optimizer."""
  if name == "adamw":
    base = optax.adamw(lr_schedule, b1=b1, b2=b2, weight_decay=weight_decay)
  elif name == "adafactor":
    base = optax.adafactor(lr_schedule, weight_decay_rate=weight_decay or None)
  elif name == "sgd":
    base = optax.sgd(lr_schedule, momentum=b1)
  else:
    raise ValueError(f"optimizers.create.name={name!r}; expected adamw, adafactor or sgd")
  if clip_norm and clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(clip_norm), base)
  return base
