"""Span masking for self-supervised speech/audio models (wav2vec 2.0 §3.1, w2v-BERT §3.2).

Every frame starts a span with probability `mask_prob`; a span covers that frame and the next
`span - 1`. Spans may overlap, so the masked fraction of a long sequence is
`1 - (1 - mask_prob) ** span` (≈ 0.49 for the papers' 0.065 and 10), less near the start.
Shapes are static (no per-example loops), so it jits and shards with the batch.
"""
import jax
import jax.numpy as jnp
import numpy as np


def span_mask(rng, batch: int, length: int, mask_prob: float = 0.065, span: int = 10):
  """Bool `[batch, length]`, True where the frame is masked."""
  if not 0.0 <= mask_prob <= 1.0:
    raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
  if span < 1:
    raise ValueError(f"mask span must be >= 1, got {span}")
  starts = jax.random.bernoulli(rng, mask_prob, (batch, length)).astype(jnp.int32)
  # Frame t is masked iff some start falls in (t - span, t]: a difference of running counts.
  counts = jnp.cumsum(starts, axis=1)
  before = jnp.pad(counts, ((0, 0), (span, 0)))[:, :length]
  return (counts - before) > 0


def expected_mask_fraction(length: int, mask_prob: float = 0.065, span: int = 10) -> float:
  """Mean of `span_mask` over frames: frame t can be reached by min(t + 1, span) starts."""
  reach = np.minimum(np.arange(length) + 1, span)
  return float(np.mean(1.0 - (1.0 - mask_prob) ** reach))
