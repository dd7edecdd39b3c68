"""The state every model trains with. A pytree: orbax checkpoints it, jit donates it."""
from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """params: trainable variables; model_state: the model's other variable collections
  (e.g. EMA codebooks), updated by its own train step; nonfinite_step: first step whose loss,
  gradients or updated variables held a NaN/Inf, or -1 — kept on device so the guard does
  not sync every step."""
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

  def record_nonfinite(self, loss, grads=None, new_params=None, new_model_state=None):
    """The step to record: this one if it is the first whose loss, gradients or updated
    variables hold a NaN/Inf. A finite loss can come with an overflowing gradient, and the
    state it produces must never be checkpointed."""
    finite = jnp.all(jnp.isfinite(loss))
    for tree in (grads, new_params, new_model_state):
      for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
          finite &= jnp.all(jnp.isfinite(leaf))
    first_bad = (self.nonfinite_step < 0) & ~finite
    return jnp.where(first_bad, self.step, self.nonfinite_step)
