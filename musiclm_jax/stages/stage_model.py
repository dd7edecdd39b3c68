"""The stage model: a prefix-LM over one stage's vocabulary, in the model interface of
`base_model.py` (loss, scoring, KV-cached sampling with classifier-free guidance)."""
import functools
import numbers
from typing import Callable, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import seqio

from musiclm_jax.stages import decoding
from musiclm_jax.stages import token_layout
from musiclm_jax.core.base_model import BaseModel, cross_entropy_with_z_loss


@gin.configurable
class DecoderOnlyModel(BaseModel):
  """A prefix-LM over one stage's vocabulary: the semantic, coarse and fine stages.

  With `stage` (a token_layout.StageVocabulary) the model knows its token layout: sampling masks
  every position to the ids of the RVQ level it stands at (and EOS at the end), and
  classifier-free guidance knows which leading input tokens are the MuLan conditioning.

  MuLan's levels: `mulan_levels` conditions on the first levels of MuLan's RVQ only (training
  and sampling; the rest are blanked like guidance's unconditional model), and
  `mulan_level_dropout` gives that share of the training examples a random shorter prefix of
  levels, so that what the stage follows is the coarse levels that captions of one meaning
  share, not the whole code tuple of each training caption (docs/prompt_following.md).
  Sampling may ask for fewer levels (`decoder_params["mulan_levels"]`).
  """
  FEATURE_CONVERTER_CLS = seqio.PrefixLMFeatureConverter

  def __init__(self, module: nn.Module, stage: Optional[token_layout.StageVocabulary] = None,
               z_loss: float = 1e-4, decode_fn: Callable = decoding.temperature_sample,
               eos_id: int = token_layout.EOS_ID, default_decoder_params: Optional[dict] = None,
               cfg_dropout_rate: float = 0.0, mask_invalid_ids: bool = True,
               mulan_levels: Optional[int] = None, mulan_level_dropout: float = 0.0):
    self.module = module
    self.stage = stage
    self.z_loss = z_loss
    self.decode_fn = decode_fn
    self.eos_id = eos_id
    self.default_decoder_params = dict(default_decoder_params or {})
    self.cfg_dropout_rate = cfg_dropout_rate
    self.mask_invalid_ids = mask_invalid_ids and stage is not None
    # MuLan tokens lead the inputs of every stage that reads them (token_layout.STAGES).
    self.conditioning_length = sum(
        len(levels) for stream, levels in (stage.reads if stage else ()) if stream == "mulan")
    if cfg_dropout_rate and not self.conditioning_length:
      raise ValueError("cfg_dropout_rate needs a stage that reads MuLan conditioning tokens")
    if (mulan_levels is not None or mulan_level_dropout) and not self.conditioning_length:
      raise ValueError("mulan_levels and mulan_level_dropout need a stage that reads MuLan "
                       "conditioning tokens")
    self.mulan_levels = (self.conditioning_length if mulan_levels is None else
                         self._checked_levels(mulan_levels, "mulan_levels"))
    if not 0.0 <= mulan_level_dropout <= 1.0:
      raise ValueError(f"mulan_level_dropout must be in [0, 1], got {mulan_level_dropout}")
    self.mulan_level_dropout = mulan_level_dropout

  def _checked_levels(self, levels, name: str) -> int:
    if not isinstance(levels, numbers.Integral) or not 1 <= levels <= self.conditioning_length:
      raise ValueError(f"{name} must be an int from 1 to the stage's "
                       f"{self.conditioning_length} MuLan levels, got {levels!r}")
    return levels

  def _features(self, batch):
    names = ("decoder_target_tokens", "decoder_segment_ids", "decoder_positions",
             "decoder_causal_attention")
    return {k: batch[k] for k in names if k in batch}

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    input_types = input_types or {}
    shape = input_shapes["decoder_input_tokens"]
    dtype = input_types.get("decoder_input_tokens", jnp.int32)
    tokens_ = jnp.ones(shape, dtype)
    return self.module.init({"params": rng, "dropout": rng}, tokens_, tokens_,
                            decoder_causal_attention=jnp.ones(shape, dtype),
                            enable_dropout=False)

  def blank_conditioning(self, batch, which):
    """Replaces the MuLan conditioning of examples `which [batch]` by padding, which
    attention ignores: the unconditional model of classifier-free guidance."""
    kept = jnp.where(which, 0, self.conditioning_length)
    return self.keep_mulan_levels(batch, kept)

  def keep_mulan_levels(self, batch, kept):
    """Blanks (to padding) the MuLan levels past the first `kept [batch]` of each example;
    MuLan's one frame of levels leads the inputs (token_layout.STAGES)."""
    return dict(batch,
                decoder_target_tokens=self._blank_levels(batch["decoder_target_tokens"], kept, 0),
                decoder_input_tokens=self._blank_levels(batch["decoder_input_tokens"], kept, 1))

  def _blank_levels(self, tokens, kept, offset: int):
    """`tokens [batch, length]` with MuLan level positions `offset + kept ..` `offset + n - 1`
    set to padding (inputs are the targets shifted right by one: offset 1)."""
    positions = jnp.arange(tokens.shape[-1])[None, :] - offset
    kept = jnp.asarray(kept)[:, None]
    return jnp.where((positions >= kept) & (positions < self.conditioning_length), 0, tokens)

  def training_conditioning(self, batch, dropout_rng):
    """The batch as training sees it: MuLan levels past `mulan_levels` blanked, a random
    prefix of them for `mulan_level_dropout` of the examples, all of them for
    `cfg_dropout_rate` of them. Returns (batch, the rng left for dropout)."""
    if not self.conditioning_length:
      return batch, dropout_rng
    size = batch["decoder_target_tokens"].shape[:1]
    kept = jnp.full(size, self.mulan_levels)
    randomised = dropout_rng is not None and (self.cfg_dropout_rate or self.mulan_level_dropout)
    if randomised:
      cfg_rng, dropout_rng = jax.random.split(dropout_rng)
      if self.mulan_level_dropout:
        cfg_rng, level_rng, prefix_rng = jax.random.split(cfg_rng, 3)
        shorter = jax.random.bernoulli(level_rng, self.mulan_level_dropout, size)
        # A prefix of 1 .. mulan_levels - 1 levels, uniformly (none shorter with one level).
        prefix = jax.random.randint(prefix_rng, size, 1, max(self.mulan_levels, 2))
        kept = jnp.where(shorter, jnp.minimum(prefix, kept), kept)
      if self.cfg_dropout_rate:
        kept = jnp.where(jax.random.bernoulli(cfg_rng, self.cfg_dropout_rate, size), 0, kept)
    elif self.mulan_levels == self.conditioning_length:
      return batch, dropout_rng
    return self.keep_mulan_levels(batch, kept), dropout_rng

  def _logits(self, params, batch, dropout_rng):
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    return self.module.apply({"params": params}, batch["decoder_input_tokens"],
                             **self._features(batch), enable_dropout=dropout_rng is not None,
                             rngs=rngs)

  def loss_fn(self, params, batch, dropout_rng):
    batch, dropout_rng = self.training_conditioning(batch, dropout_rng)
    logits = self._logits(params, batch, dropout_rng)
    weights = batch.get("decoder_loss_weights")
    if weights is None:
      weights = (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
    return cross_entropy_with_z_loss(logits, batch["decoder_target_tokens"],
                                     weights.astype(jnp.float32), self.z_loss)

  def score_batch(self, params, batch, return_intermediates: bool = False):
    """Sum of target-token log-likelihoods per example `[batch]`, conditioned on the MuLan
    levels training conditions on."""
    batch, _ = self.training_conditioning(batch, None)
    logits = self._logits(params, batch, None)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    token_scores = jnp.take_along_axis(
        log_probs, batch["decoder_target_tokens"][..., None], axis=-1)[..., 0]
    weights = batch.get("decoder_loss_weights", batch["decoder_target_tokens"] > 0)
    scores = jnp.sum(token_scores * weights, axis=-1)
    if return_intermediates:
      return scores, {"token_scores": token_scores}
    return scores

  def prefill_cache(self, params, decoder_input_tokens, decoder_causal_attention,
                    prompt_lengths=None):
    """A KV cache for the full length holding the prompt. Returns `(cache, prompt_lengths)`.

    prompt_lengths `[batch]`: number of known target tokens (default: the inputs region,
    `sum(decoder_causal_attention) - 1`); the first decoding step feeds position
    `prompt_lengths`, the last known token, to predict the first unknown one.
    """
    shapes = jax.eval_shape(
        functools.partial(self.module.apply, enable_dropout=False, decode=True, mutable=["cache"]),
        {"params": params}, decoder_input_tokens)[1]["cache"]
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    if prompt_lengths is None:
      prompt_lengths = jnp.sum(decoder_causal_attention, axis=-1) - 1
    prompt_lengths = jnp.maximum(prompt_lengths.astype(jnp.int32), 0)
    # Target i is input i + 1: zeros inside the prompt are padding (blanked conditioning);
    # positions after it are unknown yet, so they are marked real here.
    positions = jnp.arange(decoder_input_tokens.shape[-1])[None, :]
    known_targets = jnp.roll(decoder_input_tokens, -1, axis=-1)
    targets = jnp.where(positions < prompt_lengths[:, None], known_targets, 1)
    _, variables = self.module.apply(
        {"params": params, "cache": cache}, decoder_input_tokens, targets,
        decoder_causal_attention=decoder_causal_attention, enable_dropout=False, decode=True,
        prefill=True, prefill_lengths=prompt_lengths, mutable=["cache"])
    return variables["cache"], prompt_lengths

  def _step_logits(self, params, ids, cache):
    logits, variables = self.module.apply(
        {"params": params, "cache": cache}, ids, enable_dropout=False, decode=True,
        mutable=["cache"])
    return logits[:, 0, :], variables["cache"]

  def level_mask_callback(self, inputs_lengths, length: int, num_decodes: int = 1):
    """`logit_callback_fn` allowing, at each target position, only the ids of the RVQ level
    it stands at (frame-major), and only EOS at the last position."""
    ((stream, levels),) = self.stage.writes
    table = jnp.asarray(self.stage.allowed_ids_mask(stream, levels, len(levels)))
    eos_only = jnp.zeros((self.stage.vocab_size,), bool).at[self.eos_id].set(True)
    inputs_lengths = jnp.repeat(inputs_lengths, num_decodes)

    def callback(logits, state):
      # The model's vocabulary may be padded past the stage's ids (padded_vocab_size): those
      # ids are never allowed.
      pad = logits.shape[-1] - table.shape[-1]
      if pad < 0:
        raise ValueError(f"the model's {logits.shape[-1]} logits are fewer than stage "
                         f"{self.stage.name!r}'s {table.shape[-1]} ids")
      allowed_table = jnp.pad(table, ((0, 0), (0, pad)))
      only_eos = jnp.pad(eos_only, (0, pad))
      generated = state.cur_index - inputs_lengths
      allowed = allowed_table[generated % len(levels)]
      allowed = jnp.where((generated >= length - 1 - inputs_lengths)[:, None], only_eos, allowed)
      return jnp.where(allowed, logits, decoding.NEG_INF)

    return callback

  def predict_batch_with_aux(self, params, batch, rng=None, *, num_decodes: int = 1,
                             decoder_params: Optional[dict] = None,
                             return_all_decodes: bool = False, prompt_with_targets: bool = False):
    """Samples the targets after each example's prompt.

    The prompt is the inputs region (`decoder_causal_attention`), plus, with
    `prompt_with_targets`, the leading nonzero target tokens already in
    `decoder_input_tokens` (continuation). decoder_params (over the model's defaults):
    temperature, topk, topp, max_decode_steps, logit_callback_fn, and guidance_scale
    (classifier-free guidance: logits_u + scale (logits_c - logits_u); 1 disables it) and
    mulan_levels (condition on MuLan's first levels only; default the model's `mulan_levels`).

    Returns `(decodes, {"scores": ...})`: decodes `[batch, length]` (best of num_decodes by
    score) or `[batch, num_decodes, length]` — the tokens after the prompt, left-aligned,
    0-padded.
    """
    params_d = {**self.default_decoder_params, **(decoder_params or {})}
    guidance = params_d.pop("guidance_scale", 1.0)
    user_callback = params_d.pop("logit_callback_fn", None)
    levels = params_d.pop("mulan_levels", None)
    if self.conditioning_length:
      levels = self._checked_levels(self.mulan_levels if levels is None else levels,
                                    "decoder_params['mulan_levels']")
    elif levels is not None:
      raise ValueError("decoder_params['mulan_levels'] needs a stage with MuLan conditioning")
    inputs = batch["decoder_input_tokens"]
    causal = batch.get("decoder_causal_attention")
    if causal is None:
      causal = jnp.zeros_like(inputs).at[:, 0].set(1)
    inputs_lengths = jnp.sum(causal, axis=-1).astype(jnp.int32) - 1
    if prompt_with_targets:
      prompt = inputs
      prompt_lengths = jnp.sum(inputs > 0, axis=-1).astype(jnp.int32)
    else:
      prompt, prompt_lengths = inputs * causal, inputs_lengths
    if self.conditioning_length and levels < self.conditioning_length:
      # After the prompt's length is counted: blanked levels are zeros, as padding is.
      prompt = self._blank_levels(prompt, jnp.full(prompt.shape[:1], levels), 1)
    cache, _ = self.prefill_cache(params, prompt, causal, prompt_lengths)
    if guidance != 1.0:
      if not self.conditioning_length:
        raise ValueError("guidance_scale needs a stage with MuLan conditioning")
      unconditional = self._blank_levels(prompt, jnp.zeros(prompt.shape[:1], jnp.int32), 1)
      cache = {"cond": cache,
               "uncond": self.prefill_cache(params, unconditional, causal, prompt_lengths)[0]}

    def tokens_to_logits(ids, cache):
      if guidance == 1.0:
        return self._step_logits(params, ids, cache)
      cond, cond_cache = self._step_logits(params, ids, cache["cond"])
      uncond, uncond_cache = self._step_logits(params, ids, cache["uncond"])
      return uncond + guidance * (cond - uncond), {"cond": cond_cache, "uncond": uncond_cache}

    callbacks = [c for c in (user_callback,) if c is not None]
    if self.mask_invalid_ids:
      callbacks.append(self.level_mask_callback(inputs_lengths, inputs.shape[-1], num_decodes))

    def logit_callback_fn(logits, state):
      for callback in callbacks:
        logits = callback(logits, state)
      return logits

    rng = rng if rng is not None else jax.random.key(0)
    decodes, scores = self.decode_fn(
        inputs=prompt, cache=cache, tokens_to_logits=tokens_to_logits, eos_id=self.eos_id,
        decode_rng=rng, num_decodes=num_decodes, initial_index=prompt_lengths,
        logit_callback_fn=logit_callback_fn if callbacks else None, **params_d)
    decodes = _drop_prompt(decodes, prompt_lengths)
    if return_all_decodes:
      return decodes, {"scores": scores}
    best = jnp.argmax(scores, axis=-1)
    pick = lambda x: jnp.take_along_axis(x, best.reshape(-1, 1, *([1] * (x.ndim - 2))), 1)[:, 0]
    return pick(decodes), {"scores": pick(scores[..., None])[..., 0]}


def _drop_prompt(decodes, prompt_lengths):
  """`[b, n, L]` target-position tokens -> the generated part, shifted to start at 0."""
  length = decodes.shape[-1]
  src = jnp.arange(length)[None, :] + prompt_lengths[:, None]  # [b, L]
  shifted = jnp.take_along_axis(decodes, jnp.minimum(src, length - 1)[:, None, :], axis=-1)
  return jnp.where((src < length)[:, None, :], shifted, 0)
