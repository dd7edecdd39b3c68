"""The pluggable embedder behind FAD and KL: a model that maps fixed windows of audio to vectors.

  embedder = Embedder(name="musicnn_mtt", sample_rate=16000, window_samples=47616,
                      hop_samples=47616, embed_fn=fn)      # fn: float [n, window] -> [n, dim]
  embedder.embed_clip(wav)                                  # [windows, dim]

A classifier is the same thing whose vectors are label logits (`labels` names them), so KL
reuses the windowing and the cache. Embedders of the standard models: `musicnn_embedder`
(offline, the musicnn package's weights), `vggish_embedder` (released weights from a local
file), `mulan_embedder` (ours).
"""
import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

EmbedFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Embedder:
  """name: identifies model + weights + output (it keys the embedding cache, so two different
  models must not share one); windows start every `hop_samples`; a tail shorter than a window
  is dropped, and a clip shorter than one window is zero-padded to one."""
  name: str
  sample_rate: int
  window_samples: int
  hop_samples: int
  embed_fn: EmbedFn = dataclasses.field(compare=False, repr=False)
  labels: tuple = ()
  max_batch: int = 32

  def __post_init__(self):
    if self.window_samples <= 0 or self.hop_samples <= 0:
      raise ValueError(f"embedder {self.name}: window and hop must be positive, got "
                       f"{self.window_samples} and {self.hop_samples}")

  def windows(self, wav) -> np.ndarray:
    """float `[samples]` -> `[num_windows, window_samples]`."""
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1 or wav.shape[0] == 0:
      raise ValueError(f"embedder {self.name} takes one mono clip [samples], got shape "
                       f"{wav.shape}")
    if wav.shape[0] < self.window_samples:
      wav = np.pad(wav, (0, self.window_samples - wav.shape[0]))
    starts = np.arange(0, wav.shape[0] - self.window_samples + 1, self.hop_samples)
    return wav[starts[:, None] + np.arange(self.window_samples)[None, :]]

  def embed_clip(self, wav) -> np.ndarray:
    """float `[samples]` at `sample_rate` -> `[num_windows, dim]` (float32)."""
    windows = self.windows(wav)
    parts = [np.asarray(self.embed_fn(windows[i:i + self.max_batch]), np.float32)
             for i in range(0, windows.shape[0], self.max_batch)]
    return np.concatenate(parts)


def embed_clips(embedder: Embedder, wavs: Sequence[np.ndarray], cache=None,
                ids: Optional[Sequence[str]] = None) -> list:
  """One `[windows, dim]` array per clip; with an `EmbeddingCache`, clips seen before (same
  embedder, same samples) are read back instead of recomputed."""
  ids = list(ids) if ids is not None else [str(i) for i in range(len(wavs))]
  if cache is None:
    return [embedder.embed_clip(wav) for wav in wavs]
  return [cache.get_or_compute(embedder, clip_id, wav) for clip_id, wav in zip(ids, wavs)]


def musicnn_embedder(tagger, output: str = "penultimate") -> Embedder:
  """musicnn (`musiclm_jax.evaluation.musicnn.MusicnnTagger`) on 3 s windows: `output` "penultimate"
  (200-d, the FAD embedding), "mean_pool" / "max_pool" (753-d), or "logits" (50 tags, KL)."""
  return Embedder(
      name=f"{tagger.name}_{output}", sample_rate=tagger.sample_rate,
      window_samples=tagger.window_samples, hop_samples=tagger.window_samples,
      embed_fn=lambda windows: tagger.outputs(windows)[output],
      labels=tuple(tagger.labels) if output == "logits" else ())


def vggish_embedder(model) -> Embedder:
  """VGGish (`musiclm_jax.evaluation.vggish.VGGish`) on its 0.96 s examples, no overlap: 128-d.
  An example spans 15600 samples (96 frames of 25 ms every 10 ms) but examples start every
  0.96 s (15360), as the release's front end cuts them from one framing of the clip."""
  return Embedder(name=model.name, sample_rate=model.sample_rate,
                  window_samples=model.window_samples, hop_samples=model.hop_samples,
                  embed_fn=model.embed)


def mulan_embedder(mulan, name: str = "mulan") -> Embedder:
  """A trained MuLan's audio tower (`mulan_tokenizer.MuLanEmbedder`) on its own windows."""
  cfg = mulan.model.config
  return Embedder(name=name, sample_rate=cfg.sample_rate, window_samples=cfg.window_samples,
                  hop_samples=cfg.hop_samples, embed_fn=mulan.embed_audio)
