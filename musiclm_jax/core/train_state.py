"""The state every model trains with. A pytree: orbax checkpoints it, jit donates it."""
from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """params: trainable variables; model_state: the model's other variable collections
  (e.g. EMA codebooks), updated by its own train step; nonfinite_step: first step whose loss
  was NaN/Inf, or -1 — kept on device so the guard does not sync every step."""
  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  nonfinite_step: jax.Array

  @classmethod
  def create(cls, params, opt_state, model_state=None):
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
               model_state=model_state if model_state is not None else {},
               nonfinite_step=jnp.full((), -1, jnp.int32))

  def record_nonfinite(self, loss):
    first_bad = (self.nonfinite_step < 0) & ~jnp.isfinite(loss)
    return jnp.where(first_bad, self.step, self.nonfinite_step)
