"""How good are three trained tokenizers on held-out clips: the numbers that compare corpora.

- codec: SoundStream's reconstruction SI-SNR (dB) and multi-scale log-mel distance, the
  clip's whole length (evaluator.codec_reconstruction);
- MuLan: caption -> clip retrieval among the split's clips, recall@1 / @5 against chance
  (k / n), each clip embedded whole (windows averaged) as the tokenizing task does;
- w2v-BERT: usage of the semantic codebook (the k-means the stages read): perplexity
  exp(entropy) of the ids over every frame of the split, out of the codebook's size, and the
  share of codes used at all.

The tokenizers come from gin as in the tokenizing tasks (tasks/<dataset>_tokens.gin and the
model dirs), the clips from a pairs task (or TFDS name) and split.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from musiclm_jax.core import audio
from musiclm_jax.data import music_tokenizers
from musiclm_jax.evaluation import eval_sets
from musiclm_jax.evaluation import evaluator
from musiclm_jax.mulan import contrastive


def code_usage(ids: np.ndarray, codebook_size: int) -> dict:
  """Perplexity (exp entropy, at most codebook_size) and used share of a codebook's ids."""
  ids = np.asarray(ids).reshape(-1)
  if not ids.size:
    raise ValueError("no codes to count")
  counts = np.bincount(ids, minlength=codebook_size).astype(np.float64)
  probs = counts / counts.sum()
  nonzero = probs[probs > 0]
  return {"perplexity": float(np.exp(-np.sum(nonzero * np.log(nonzero)))),
          "used": float(np.mean(counts > 0)), "codebook_size": int(codebook_size),
          "frames": int(ids.size)}


def retrieval(tokenizers: music_tokenizers.MusicTokenizers, clips: eval_sets.ClipSet) -> dict:
  """Caption -> clip recall@1/@5 among the clips, with chance k / n."""
  embedder = tokenizers.mulan.embedder
  rate = tokenizers.mulan_sample_rate
  audio = np.concatenate([embedder.embed_audio(wav[None]) for wav in clips.at_rate(rate)])
  text = np.asarray(embedder.embed_text(list(clips.texts)))
  recall = contrastive.recall_at_k(text, audio, ks=(1, 5))
  n = len(clips)
  return {"R@1": recall["R@1"], "R@5": recall.get("R@5"), "chance_R@1": 1.0 / n,
          "chance_R@5": min(5, n) / n, "median_rank": recall["median_rank"], "clips": n}


def _leveled(clips: eval_sets.ClipSet, dbfs: Optional[float]) -> eval_sets.ClipSet:
  if dbfs is None:
    return clips
  return dataclasses.replace(clips, wavs=[audio.loudness_normalize(w, dbfs) for w in clips.wavs])


def audio_tasks_target() -> float:
  from musiclm_jax.data import audio_tasks  # pylint: disable=import-outside-toplevel
  return audio_tasks.TARGET_DBFS


def pairs_normalised(reference: str) -> bool:
  """Whether MuLan trained on `reference`'s audio loudness-normalised (a pairs task says;
  synthetic pairs keep their level, their captions name it)."""
  from musiclm_jax.data import audio_tasks  # pylint: disable=import-outside-toplevel
  registered = audio_tasks._REGISTERED.get(reference)  # pylint: disable=protected-access
  return True if registered is None else bool(registered[3])


def report(reference: str, split: str, max_clips: Optional[int] = None,
           tokenizers: Optional[music_tokenizers.MusicTokenizers] = None) -> dict:
  """The three tokenizers' numbers on `reference`'s `split` (tokenizers default to gin's).

  Each tokenizer hears the clips as it was trained on them: the codec and w2v-BERT at the
  tokenizers' level (-20 dBFS, as the audio tasks and tokenizing tasks give them), MuLan as
  its pairs task did (`pairs_normalised`).
  """
  tokenizers = tokenizers or music_tokenizers.load_music_tokenizers()
  raw, record = eval_sets.read_references(reference, split, max_clips)
  clips = _leveled(raw, tokenizers.loudness_dbfs)
  rate = tokenizers.layout.semantic_sample_rate
  semantic = np.concatenate([np.asarray(tokenizers.semantic.tokenize(wav[None]))[0]
                             for wav in clips.at_rate(rate)])
  mulan_clips = _leveled(raw, audio_tasks_target() if pairs_normalised(reference) else None)
  return {
      "reference": {k: record[k] for k in ("name", "split", "num_clips", "sample_rate")},
      "codec": evaluator.codec_reconstruction(tokenizers.codec, clips),
      "mulan_retrieval": retrieval(tokenizers, mulan_clips),
      "semantic_codes": code_usage(semantic, tokenizers.semantic.centroids.num_clusters),
      "tokenizers": tokenizers.fingerprint,
  }
