"""Conditioning the stages only on MuLan code tuples they were trained on.

A prompt's MuLan embedding, quantised level by level, is nearly always a code tuple no
training clip had: the deeper RVQ levels are close to unique per caption, and a small stage
learns the tuples it saw rather than what they mean. Prompts worded unlike the training
captions then land on unseen tuples and are followed at chance, even where MuLan itself
reads them right (docs/prompt_following.md). The index keeps the tuples the stages trained on
(from the cached token task, the very features they read) and replaces a prompt's codes by the
tuple whose dequantised vector is nearest to the prompt's MuLan embedding: a nearest-neighbour
quantiser over the stages' own conditioning set.

  index = ConditioningIndex.from_token_task("synthetic_music_tokens_demo", ("mulan_text",))
  index.save("out/conditioning_index.npz")
  codes = index.nearest(mulan_tokenizer.quantizer, mulan_tokenizer.embedder.embed_text(texts))

`python -m musiclm_jax.build_conditioning_index` builds one (`build`); `pipeline.Parts.
conditioning_index_file` makes generation use it.
"""
import dataclasses
from typing import Sequence

import gin
import numpy as np
from absl import logging

from musiclm_jax.core import files

# The token task's conditioning features (data/token_tasks.py): the clip's audio codes and,
# on captioned sets, the caption's text codes.
CONDITIONING_FEATURES = ("mulan", "mulan_text")


@dataclasses.dataclass(frozen=True)
class ConditioningIndex:
  """codes: int32 `[tuples, levels]`, each distinct; counts: how many training examples read
  each (once per indexed feature)."""
  codes: np.ndarray
  counts: np.ndarray

  def __post_init__(self):
    if self.codes.ndim != 2 or not len(self.codes):
      raise ValueError(f"a conditioning index needs codes [tuples >= 1, levels], got shape "
                       f"{self.codes.shape}")
    if self.counts.shape != (len(self.codes),):
      raise ValueError(f"counts {self.counts.shape} do not match {len(self.codes)} tuples")

  @classmethod
  def from_codes(cls, codes) -> "ConditioningIndex":
    """From every training example's codes `[examples, levels]` (repeats counted)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or not len(codes):
      raise ValueError(f"expected codes [examples >= 1, levels], got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer) or codes.min() < 0:
      raise ValueError("conditioning codes must be non-negative integers")
    unique, counts = np.unique(codes.astype(np.int32), axis=0, return_counts=True)
    return cls(unique, counts.astype(np.int64))

  @classmethod
  def from_token_task(cls, task_name: str, features: Sequence[str] = ("mulan_text",),
                      split: str = "train") -> "ConditioningIndex":
    """The tuples of `features` over `split` of a (cached) token task."""
    # pylint: disable=import-outside-toplevel  (TensorFlow and seqio only for building)
    import seqio
    from musiclm_jax.data import token_tasks
    unknown = [f for f in features if f not in CONDITIONING_FEATURES]
    if not features or unknown:
      raise ValueError(f"conditioning features must be some of {CONDITIONING_FEATURES}, got "
                       f"{list(features)}")
    token_tasks.add_configured_cache_dirs()
    task = seqio.get_mixture_or_task(task_name)
    missing = [f for f in features if f not in task.output_features]
    if missing:
      raise ValueError(f"token task {task_name} has no feature {missing} (mulan_text exists "
                       f"only on captioned sets); it has {sorted(task.output_features)}")
    dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1,
                               use_cached=task.requires_caching)
    codes = [ex[f] for ex in dataset.as_numpy_iterator() for f in features]
    if not codes:
      raise ValueError(f"token task {task_name} ({split}) has no examples to index")
    return cls.from_codes(np.stack(codes))

  def check(self, num_levels: int, codebook_size: int) -> None:
    levels = self.codes.shape[1]
    if levels != num_levels or self.codes.max() >= codebook_size:
      raise ValueError(f"the conditioning index holds {levels}-level codes up to "
                       f"{self.codes.max()}; the MuLan RVQ has {num_levels} levels x "
                       f"{codebook_size} codes (was the index built over another MuLan?)")

  def nearest(self, quantizer, embeddings) -> np.ndarray:
    """Unit `[batch, dim]` MuLan embeddings -> int32 `[batch, levels]`: for each, the indexed
    tuple whose vector (`quantizer.vectors`) has the highest cosine with it."""
    self.check(quantizer.num_levels, quantizer.codebook_size)
    vectors = quantizer.vectors(self.codes)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    embeddings = np.asarray(embeddings, np.float32)
    embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True),
                                         1e-12)
    return self.codes[np.argmax(embeddings @ vectors.T, axis=1)]

  def save(self, path) -> str:
    return files.save_npz(path, codes=self.codes, counts=self.counts)

  @classmethod
  def load(cls, path) -> "ConditioningIndex":
    data = files.load_npz(path, ("codes", "counts"), "conditioning index",
                          "python -m musiclm_jax.build_conditioning_index")
    return cls(data["codes"], data["counts"])


@gin.configurable(module="conditioning_index")
def build(token_task: str, output_path: str, split: str = "train") -> str:
  """Indexes the tuples the stages read in training: the caption's codes, the clip's audio
  codes, or both, as `tasks.mulan_text_conditioning.rate` (1, 0, between) says, which must be
  bound as it was for the stages. Writes `output_path` (atomically); returns it."""
  # pylint: disable=import-outside-toplevel  (TensorFlow and seqio only for building)
  from musiclm_jax.data import stage_tasks
  rate = stage_tasks.mulan_text_conditioning()
  features = (("mulan_text",) if rate == 1 else ("mulan",) if rate == 0
              else ("mulan", "mulan_text"))
  index = ConditioningIndex.from_token_task(token_task, features, split)
  index.save(output_path)
  logging.info("Wrote %s: %d distinct %d-level tuples of %s over %d %s examples", output_path,
               len(index.codes), index.codes.shape[1], "+".join(features),
               int(index.counts.sum()) // len(features), split)
  return output_path
