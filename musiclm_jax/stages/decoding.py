"""Autoregressive sampling with a KV cache, in t5x's decode-function protocol.

`temperature_sample(inputs, cache, tokens_to_logits, eos_id, decode_rng, num_decodes, ...)`
runs the whole loop inside one `lax.while_loop` (no Python loop per token), so it jits and
shards like any other step. `logit_callback_fn(logits, state)` is the hook for per-position
masks (RVQ levels) and classifier-free guidance.
"""
from typing import Callable, Optional

import flax
import gin
import jax
import jax.numpy as jnp
from jax import lax

NEG_INF = -1e10

# MusicLM §4: sampling temperature per stage.
STAGE_TEMPERATURES = {"semantic": 1.0, "coarse": 0.95, "fine": 0.4}


@gin.configurable(module="decoding")
def stage_decoder_params(stage: str = gin.REQUIRED) -> dict:
  """For gin: `stage_model.DecoderOnlyModel.default_decoder_params = @decoding.stage_decoder_params()`."""
  return {"temperature": STAGE_TEMPERATURES[stage]}


@flax.struct.dataclass
class SamplingLoopState:
  """`cur_index [b]`: position whose *input* token is fed next; `sequences [b, L+1]` holds
  decoder inputs (position i) so the token sampled at position i lands at i + 1."""
  step: jax.Array
  cur_index: jax.Array
  sequences: jax.Array
  cache: dict
  rng: jax.Array
  ended: jax.Array
  log_prob: jax.Array


def _expand(x, n):
  """`[b, ...] -> [b * n, ...]`, each example repeated n times consecutively."""
  return jnp.repeat(x, n, axis=0) if n > 1 else x


def _expand_cache(cache, n):
  return jax.tree.map(lambda x: _expand(x, n), cache)


def apply_top_k(logits, k: int):
  """Keeps the k largest logits per row (k <= 0: all)."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, NEG_INF, logits)


def apply_top_p(logits, p: float):
  """Nucleus: keeps the smallest set of tokens whose probability mass reaches p (p <= 0 or
  >= 1: all). The most likely token always survives."""
  if p <= 0.0 or p >= 1.0:
    return logits
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  # Number of tokens needed to reach p: the cutoff is the logit of the last one kept.
  keep = jnp.sum(cumulative < p, axis=-1, keepdims=True)
  cutoff = jnp.take_along_axis(sorted_logits, keep, axis=-1)
  return jnp.where(logits < cutoff, NEG_INF, logits)


def temperature_sample(
    inputs: jax.Array,
    cache: dict,
    tokens_to_logits: Callable[[jax.Array, dict], tuple[jax.Array, dict]],
    eos_id: int,
    decode_rng: jax.Array,
    num_decodes: int = 1,
    temperature: float = 1.0,
    topk: int = 0,
    topp: float = 0.0,
    initial_index: Optional[jax.Array] = None,
    logit_callback_fn: Optional[Callable[[jax.Array, SamplingLoopState], jax.Array]] = None,
    max_decode_steps: Optional[int] = None,
):
  """Samples continuations of `inputs`.

  Args:
    inputs: `[batch, length]` decoder input tokens: nonzero entries are the prompt (forced),
      zeros are sampled. Position `initial_index` is the first one fed to the model.
    cache: KV cache for `batch` examples, already prefilled up to `initial_index`.
    tokens_to_logits: `(ids [b', 1], cache) -> (logits [b', vocab], cache)`.
    eos_id: a sequence that samples it stops; later positions stay 0 (PAD).
    temperature: 0 means greedy (argmax).
    initial_index: `[batch]` first position to feed; defaults to 0 (no prompt).
    logit_callback_fn: `(logits [b', vocab], state) -> logits`, applied before sampling.
    max_decode_steps: stop after this many sampled tokens.

  Returns:
    `(sequences [batch, num_decodes, length], log_probs [batch, num_decodes])` where
    `sequences[..., i]` is the token predicted at position i (t5x's target convention) and
    log_probs sum the log-probabilities (at temperature 1) of the sampled tokens.
  """
  batch, length = inputs.shape
  if initial_index is None:
    initial_index = jnp.zeros((batch,), jnp.int32)
  initial_index = initial_index.astype(jnp.int32)
  n = batch * num_decodes
  sequences = jnp.concatenate([inputs, jnp.zeros((batch, 1), inputs.dtype)], axis=1)
  sequences = _expand(sequences, num_decodes)
  start = _expand(initial_index, num_decodes)
  end = jnp.full((n,), length, jnp.int32)
  if max_decode_steps is not None:
    end = jnp.minimum(end, start + max_decode_steps)

  state = SamplingLoopState(
      step=jnp.zeros((), jnp.int32), cur_index=start, sequences=sequences,
      cache=_expand_cache(cache, num_decodes), rng=decode_rng,
      ended=start >= end, log_prob=jnp.zeros((n,), jnp.float32))

  def cond(s):
    return ~jnp.all(s.ended)

  def body(s):
    rows = jnp.arange(n)
    token = s.sequences[rows, s.cur_index][:, None]
    logits, cache = tokens_to_logits(token, s.cache)
    logits = logits.astype(jnp.float32)
    if logit_callback_fn is not None:
      logits = logit_callback_fn(logits, s)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    rng, step_rng = jax.random.split(s.rng)
    if isinstance(temperature, (int, float)) and temperature == 0.0:
      sampled = jnp.argmax(logits, axis=-1)
    else:
      filtered = apply_top_p(apply_top_k(logits, topk), topp)
      sampled = jax.random.categorical(step_rng, filtered / temperature, axis=-1)
    sampled = sampled.astype(s.sequences.dtype)
    next_index = s.cur_index + 1
    # A nonzero input token at the next position is part of the prompt: it is forced
    # (t5x's forced decoding), and only sampled tokens count towards the score.
    given = s.sequences[rows, next_index]
    forced = given > 0
    new_token = jnp.where(s.ended, 0, jnp.where(forced, given, sampled))
    sequences = s.sequences.at[rows, next_index].set(new_token)
    token_log_prob = jnp.take_along_axis(log_probs, new_token[:, None].astype(jnp.int32), -1)[:, 0]
    log_prob = s.log_prob + jnp.where(s.ended | forced, 0.0, token_log_prob)
    ended = s.ended | (new_token == eos_id) | (next_index >= end)
    return SamplingLoopState(step=s.step + 1, cur_index=jnp.minimum(next_index, length - 1),
                             sequences=sequences, cache=cache, rng=rng, ended=ended,
                             log_prob=log_prob)

  final = lax.while_loop(cond, body, state)
  decodes = final.sequences[:, 1:].reshape(batch, num_decodes, length)
  return decodes, final.log_prob.reshape(batch, num_decodes)
