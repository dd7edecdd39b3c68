"""Per-clip embedding cache on disk, so a reference set is embedded once per embedder.

  cache = EmbeddingCache("/data/eval_cache")
  cache.get_or_compute(embedder, "ytid_abc", wav)     # [windows, dim]

Layout: `{directory}/{embedder.name}/{clip id}-{content hash}.npy`. The key holds a hash of
the samples, the sample rate and the windowing, so a changed clip (or a different crop of
it) is recomputed instead of silently reusing a stale embedding; the embedder's `name` must
change when its weights do.
"""
import hashlib
import os
import re

import numpy as np

from musiclm_jax.core import files

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class EmbeddingCache:

  def __init__(self, directory):
    self.directory = os.fspath(directory)
    self.hits = 0
    self.misses = 0

  def path(self, embedder, clip_id: str, wav: np.ndarray) -> str:
    wav = np.ascontiguousarray(wav, np.float32)
    digest = hashlib.sha256(wav.tobytes())
    digest.update(f"{embedder.sample_rate}/{embedder.window_samples}/"
                  f"{embedder.hop_samples}".encode())
    safe_id = _UNSAFE.sub("_", str(clip_id))[:80] or "clip"
    return os.path.join(self.directory, _UNSAFE.sub("_", embedder.name),
                        f"{safe_id}-{digest.hexdigest()[:20]}.npy")

  def get_or_compute(self, embedder, clip_id: str, wav) -> np.ndarray:
    wav = np.asarray(wav, np.float32)
    path = self.path(embedder, clip_id, wav)
    if os.path.isfile(path):
      self.hits += 1
      return np.load(path)
    self.misses += 1
    embedding = embedder.embed_clip(wav)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with files.atomic_path(path, suffix=".npy") as tmp:  # np.save appends .npy otherwise
      np.save(tmp, embedding)
    return embedding
