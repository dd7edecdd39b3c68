"""MuLan cycle consistency (MCC, MusicLM Sec. 5.1): how well audio matches its text prompt.

MCC is the cosine similarity between the MuLan text embedding of a caption and the MuLan audio
embedding of a clip (generated from that caption, or its reference), averaged over pairs.
Both embeddings are unit-norm, so it lies in [-1, 1]; higher is better.

  mcc = MuLanCycleConsistency(MuLanEmbedder.from_model_dir(model_dir, model))
  mcc(captions, wavs)      # {"mcc": mean, "per_example": [n]}

`cosine_similarity` is the project's one cosine of embeddings: MCC here, the best-of-N reranker
(inference/pipeline.py) and the retrieval bench (bench/prompt_following_parts.py).
"""
import numpy as np


def cosine_similarity(a, b) -> np.ndarray:
  """float32 cosine of `[..., dim]` vectors along the last axis (broadcast: `a[:, None]` against
  `b[None]` gives every pair). Computed in float64; an all-zero vector scores 0."""
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return np.sum(a * b, axis=-1).astype(np.float32)


def cycle_consistency(text_embeddings, audio_embeddings) -> np.ndarray:
  """Row-wise cosine of `[n, dim]` text and audio embeddings -> `[n]` (renormalised here, so
  un-normalised inputs are fine)."""
  text = np.asarray(text_embeddings, np.float64)
  audio = np.asarray(audio_embeddings, np.float64)
  if text.shape != audio.shape or text.ndim != 2:
    raise ValueError(f"MCC takes text and audio embeddings [n, dim] of one shape, got "
                     f"{text.shape} and {audio.shape}")
  if np.any(np.linalg.norm(text, axis=-1) * np.linalg.norm(audio, axis=-1) == 0):
    raise ValueError("MCC got an all-zero embedding; its cosine is undefined")
  return cosine_similarity(text, audio)


class MuLanCycleConsistency:
  """Captions and clips -> MCC, with a trained MuLan (`mulan_tokenizer.MuLanEmbedder`)."""

  def __init__(self, embedder):
    self.embedder = embedder

  def __call__(self, captions, wavs) -> dict:
    """captions: n strings; wavs: float `[n, samples]` at MuLan's rate (windowed if long)."""
    captions = list(captions)
    wavs = np.asarray(wavs)
    if wavs.ndim != 2 or len(captions) != wavs.shape[0]:
      raise ValueError(f"MCC needs one clip per caption: {len(captions)} captions, wavs of "
                       f"shape {wavs.shape} (expected [{len(captions)}, samples])")
    per_example = cycle_consistency(self.embedder.embed_text(captions),
                                    self.embedder.embed_audio(wavs))
    return {"mcc": float(per_example.mean()), "per_example": per_example}
