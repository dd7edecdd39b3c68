"""Symmetric InfoNCE over a (possibly sharded) batch of paired embeddings, and retrieval recall.

MuLan (Huang et al., 2022, Sec. 3.2) trains its towers with CLIP's loss: for a batch of B
(audio, text) pairs, B-way softmax cross-entropy from each audio to all texts and from each
text to all audios, with a learned temperature, averaged over both directions.

Sharding: the batch is split over the mesh's data axes. Each device keeps its own rows as
queries and needs every key, so the keys are constrained to be replicated (an all-gather of
`[B, dim]`, cheap next to the towers) while the `[B, B]` logits stay row-sharded: no device
ever holds the full similarity matrix. The loss is therefore the global-batch loss on any mesh
(tests/mulan/test_contrastive.py checks 8 devices against 1).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

QUERY_AXES = ("activation_batch", "activation_joint")
GATHERED_AXES = (None, "activation_joint")   # replicated over the batch axes
LOGITS_AXES = ("activation_batch", None)
MAX_LOGIT_SCALE = 100.0  # CLIP's clip: 1 / temperature never exceeds 100


def logit_scale(log_scale):
  """exp of the learned log scale, clipped (CLIP, Sec. 2.5) so training cannot blow up."""
  return jnp.minimum(jnp.exp(log_scale), MAX_LOGIT_SCALE)


def _directional(queries, keys, scale):
  """Cross-entropy of each query row against all keys; the positive is the same index."""
  queries = nn.with_logical_constraint(queries, QUERY_AXES)
  keys = nn.with_logical_constraint(keys, GATHERED_AXES)
  logits = nn.with_logical_constraint(scale * queries @ keys.T, LOGITS_AXES)   # [B, B]
  labels = jnp.arange(logits.shape[0])
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  positive = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return -jnp.mean(positive), jnp.mean(correct)


def info_nce(audio_embeddings, text_embeddings, log_scale):
  """audio, text: L2-normalised `[batch, dim]`, row i of each a pair; log_scale: `[]`.

  Returns `(loss, metrics)`: loss is the mean of the audio->text and text->audio
  cross-entropies; metrics hold the in-batch top-1 accuracies of both directions, the scale
  and the mean cosine of positive and of negative pairs.
  """
  if audio_embeddings.shape != text_embeddings.shape or audio_embeddings.ndim != 2:
    raise ValueError(f"info_nce takes two [batch, dim] arrays of one shape, got "
                     f"{audio_embeddings.shape} and {text_embeddings.shape}")
  scale = logit_scale(log_scale)
  audio_to_text, a2t_accuracy = _directional(audio_embeddings, text_embeddings, scale)
  text_to_audio, t2a_accuracy = _directional(text_embeddings, audio_embeddings, scale)
  batch = audio_embeddings.shape[0]
  cosine = jnp.sum(audio_embeddings * text_embeddings, axis=-1)
  total_cosine = jnp.sum(jnp.sum(audio_embeddings, 0) * jnp.sum(text_embeddings, 0))
  metrics = {
      "audio_to_text_loss": audio_to_text, "text_to_audio_loss": text_to_audio,
      "audio_to_text_accuracy": a2t_accuracy, "text_to_audio_accuracy": t2a_accuracy,
      "logit_scale": scale, "positive_cosine": jnp.mean(cosine),
      # Sum over all pairs minus the diagonal, without forming [B, B] on one device.
      "negative_cosine": (total_cosine - jnp.sum(cosine)) / max(batch * (batch - 1), 1),
  }
  return 0.5 * (audio_to_text + text_to_audio), metrics


def recall_at_k(queries, keys, ks=(1, 5, 10)) -> dict:
  """Retrieval of key i by query i among all n keys: `{"R@k": fraction, "median_rank": ...,
  "chance_R@1": 1 / n}`. queries, keys: `[n, dim]` (cosine if L2-normalised)."""
  queries, keys = jnp.asarray(queries, jnp.float32), jnp.asarray(keys, jnp.float32)
  similarity = queries @ keys.T
  positive = jnp.diagonal(similarity)
  # Rank 1 = the positive beats every other key; a tie counts against it (the count
  # includes the positive itself).
  rank = jnp.sum(similarity >= positive[:, None], axis=-1)
  n = queries.shape[0]
  out = {f"R@{k}": float(jnp.mean(rank <= k)) for k in ks if k <= n}
  out["median_rank"] = float(jnp.median(rank))
  out["chance_R@1"] = 1.0 / n
  return out
