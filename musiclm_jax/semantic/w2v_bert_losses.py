"""w2v-BERT's contrastive-module losses (wav2vec 2.0 §3.3): contrastive with distractors and
codebook diversity. The MLM loss is the shared cross-entropy (`models.cross_entropy_with_z_loss`).
"""
import jax
import jax.numpy as jnp

_NEG_INF = -1e9  # finite: a position without distractors must not produce NaN


def sample_distractors(rng, mask, num_distractors: int):
  """For every frame, `num_distractors` other masked frames of the same clip, uniformly with
  replacement (wav2vec 2.0 draws distractors from the masked steps of the same utterance).

  mask: bool `[batch, time]`. Returns (indices int32 `[batch, time, num_distractors]`,
  valid bool `[batch, time]`: the clip has at least one other masked frame). Rows of unmasked
  frames are drawn too (static shapes) but carry no loss weight.
  """
  batch, length = mask.shape
  # Masked frames first, in time order: draw j < count - 1 picks the j-th other masked frame.
  order = jnp.argsort(jnp.where(mask, 0, 1), axis=1, stable=True).astype(jnp.int32)
  count = jnp.sum(mask, axis=1, keepdims=True)
  rank = jnp.cumsum(mask, axis=1) - 1  # a masked frame's own index in `order`
  others = jnp.maximum(count - 1, 1)[..., None]
  uniform = jax.random.uniform(rng, (batch, length, num_distractors))
  pick = jnp.minimum(jnp.floor(uniform * others).astype(jnp.int32), others - 1)
  pick = pick + (pick >= rank[..., None]).astype(jnp.int32)  # skip the frame itself
  pick = jnp.minimum(pick, length - 1)
  indices = jnp.take_along_axis(order[:, None, :], pick.reshape(batch, 1, -1), axis=2)
  valid = jnp.broadcast_to(count >= 2, (batch, length))
  return indices.reshape(batch, length, num_distractors), valid


def _unit(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def contrastive_loss(context, quantized, code_ids, mask, distractors, valid,
                     temperature: float = 0.1):
  """Identify each masked frame's quantized target among its distractors.

  context, quantized: `[batch, time, dim]`; code_ids: int `[batch, time]` (the target
  codewords); mask, valid: bool `[batch, time]`; distractors: `[batch, time, K]` frame indices.
  Returns (mean loss over masked frames, metrics: `contrastive_accuracy`, the fraction of
  masked frames whose target scores highest).
  """
  # All frame pairs' cosine similarities, then gathers: [b, t, t] is far smaller than the
  # [b, t, K, dim] stack of distractor vectors.
  similarity = jnp.einsum("btd,bsd->bts", _unit(context.astype(jnp.float32)),
                          _unit(quantized.astype(jnp.float32))) / temperature
  positive = jnp.diagonal(similarity, axis1=1, axis2=2)[..., None]
  negatives = jnp.take_along_axis(similarity, distractors, axis=2)
  # A distractor carrying the target's own codeword is no distractor (fairseq's neg_is_pos).
  negative_ids = jnp.take_along_axis(code_ids, distractors.reshape(code_ids.shape[0], -1),
                                     axis=1).reshape(distractors.shape)
  drop = (negative_ids == code_ids[..., None]) | ~valid[..., None]
  logits = jnp.concatenate([positive, jnp.where(drop, _NEG_INF, negatives)], axis=-1)
  token_loss = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
  weights = mask.astype(jnp.float32)
  denominator = jnp.maximum(jnp.sum(weights), 1.0)
  correct = (jnp.argmax(logits, axis=-1) == 0).astype(jnp.float32)
  return (jnp.sum(token_loss * weights) / denominator,
          {"contrastive_accuracy": jnp.sum(correct * weights) / denominator})


def diversity_loss(quantizer_logits):
  """`(V - perplexity) / V` of the batch-averaged code distribution: 0 when every codeword is
  used equally, near 1 when one codeword takes everything (codebook collapse).

  quantizer_logits: `[batch, time, V]` (no Gumbel noise). Returns (loss, perplexity).
  """
  probs = jax.nn.softmax(quantizer_logits.astype(jnp.float32), axis=-1)
  mean = jnp.mean(probs.reshape(-1, probs.shape[-1]), axis=0)
  perplexity = jnp.exp(-jnp.sum(mean * jnp.log(mean + 1e-7)))
  size = quantizer_logits.shape[-1]
  return (size - perplexity) / size, perplexity
