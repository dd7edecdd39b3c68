"""MuLan tokens: audio or text -> MuLan embedding -> residual vector quantizer -> 12 codes.

  tokenizer = MuLanTokenizer.from_model_dir("/models/mulan", model)
  tokenizer.audio_to_tokens(wav16k)          # float [batch, samples] -> int32 [batch, levels]
  tokenizer.text_to_tokens(["calm piano"])   # -> int32 [batch, levels]

MusicLM (Sec. 3.1) trains its stages on the tokens of MuLan *audio* embeddings and samples
from the tokens of the *text* embedding; one RVQ (paper: 12 levels x 1024, `layers/rvq.py`,
shared with SoundStream) quantises both. Codes are per level, in [0, codebook_size);
`token_layout.TokenLayout.encode("mulan", codes)` turns them into stage vocabulary ids.

Audio longer than one window is embedded as the mean over windows of `window_seconds` with a
`hop_seconds` hop (10 s / 1 s in the paper); a clip no longer than a window is one window.
The mean is re-normalised onto the unit sphere, where the text embeddings live, so the one
RVQ fitted on audio serves text too.

The quantizer is fitted by `fit_rvq` (the `musiclm_jax.fit_mulan_rvq` command): k-means per
level on what the previous levels leave (`rvq.fit_state`) over audio embeddings of a
dataset, saved next to the model's checkpoints as `{model_dir}/mulan_rvq.npz`.
"""
import dataclasses
import os
from typing import Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from musiclm_jax.core import checkpoints, files, input_pipeline, partitioning, trainer
from musiclm_jax.stages import token_layout
from musiclm_jax.layers import rvq
from musiclm_jax.mulan.mulan import MuLanModel, l2_normalize

RVQ_FILENAME = "mulan_rvq.npz"
_STATE_KEYS = ("codebook", "cluster_size", "embed_sum", "initialized")


def rvq_path(model_dir) -> str:
  """Where `fit_rvq` writes the quantizer by default: next to the model's checkpoints."""
  return os.path.join(os.fspath(model_dir), RVQ_FILENAME)


def check_wav(wav) -> np.ndarray:
  """Host-side validation: float `[batch, samples]`, finite, non-empty."""
  wav = np.asarray(wav)
  if wav.ndim != 2:
    hint = "; add a batch axis: wav[None]" if wav.ndim == 1 else ""
    raise ValueError(f"MuLan takes wav [batch, samples], got shape {wav.shape}{hint}")
  if not np.issubdtype(wav.dtype, np.floating):
    raise ValueError(f"MuLan takes float samples in [-1, 1], got dtype {wav.dtype}")
  if wav.shape[0] == 0 or wav.shape[1] == 0:
    raise ValueError(f"MuLan got an empty wav of shape {wav.shape}")
  if not np.all(np.isfinite(wav)):
    rows = sorted(set(np.nonzero(~np.isfinite(wav))[0].tolist()))
    raise ValueError(f"wav has NaN/Inf samples in batch rows {rows[:10]}")
  return wav.astype(np.float32)


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
  """Starts of the full windows `0, hop, 2 hop, ...`; one window (the whole clip) when the
  clip is no longer than `window`. A tail shorter than the hop is left out."""
  if num_samples <= window:
    return np.zeros((1,), np.int64)
  return np.arange(0, num_samples - window + 1, hop)


def embed_windows(embed_fn, wav, window: int, hop: int, max_windows: int = 64):
  """`embed_fn([n, window]) -> [n, d]` over every window of `wav [batch, samples]`, averaged
  per clip and re-normalised: `[batch, d]`. At most `max_windows` windows per call."""
  starts = window_starts(wav.shape[1], window, hop)
  length = min(window, wav.shape[1])
  index = starts[:, None] + np.arange(length)[None, :]
  windows = wav[:, index].reshape(-1, length)                      # [batch * n, length]
  parts = [np.asarray(embed_fn(windows[i:i + max_windows]))
           for i in range(0, windows.shape[0], max_windows)]
  per_window = np.concatenate(parts).reshape(wav.shape[0], len(starts), -1)
  return np.array(l2_normalize(jnp.asarray(per_window.mean(axis=1))))


def restore_params(model: MuLanModel, model_dir, *, step: Optional[int] = None, mesh=None,
                   rules=None):
  """The `params` of the newest (or `step`) trainer checkpoint in `model_dir` on `mesh`
  (default: one device); the optimizer state is not read."""
  directory = epath.Path(model_dir) / "checkpoints"
  if not directory.exists():
    raise FileNotFoundError(f"no MuLan checkpoints in {directory} (train one with "
                            "`python -m musiclm_jax.train --gin_file=models/mulan/...`)")
  mesh = mesh if mesh is not None else partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
  rules = rules if rules is not None else partitioning.logical_axis_rules()
  boxed = jax.eval_shape(lambda: model.init_variables(jax.random.key(0)))["params"]
  shapes = jax.tree.map(lambda x: x.unbox(apply_constraint=False), boxed,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  shardings = partitioning.logical_to_shardings(mesh, boxed, rules)
  abstract = checkpoints.abstract_with_shardings(shapes, shardings)
  return checkpoints.restore_params(model_dir, abstract, step=step)[0]


class MuLanEmbedder:
  """A trained MuLan: `embed_audio(wav)` (windowed) and `embed_text(captions)`, numpy out."""

  def __init__(self, model: MuLanModel, params, max_windows: int = 64,
               source: Optional[str] = None):
    """source: the model directory the parameters came from (recorded by whoever scores
    with this MuLan, so an evaluation can tell whether it judges with the same one)."""
    self.model, self.params, self.max_windows = model, params, max_windows
    self.source = source
    self._audio = jax.jit(model.embed_audio)
    self._text = jax.jit(model.embed_text)

  @classmethod
  def from_model_dir(cls, model_dir, model: MuLanModel, step: Optional[int] = None):
    return cls(model, restore_params(model, model_dir, step=step),
               source=os.path.abspath(os.fspath(model_dir)))

  def embed_audio(self, wav) -> np.ndarray:
    """float `[batch, samples]` at the model's rate -> unit-norm `[batch, embed_dim]`."""
    cfg = self.model.config
    return embed_windows(lambda w: self._audio(self.params, w), check_wav(wav),
                         cfg.window_samples, cfg.hop_samples, self.max_windows)

  def embed_text(self, captions) -> np.ndarray:
    """list of non-empty strings -> unit-norm `[batch, embed_dim]`."""
    return np.array(self._text(self.params, self.model.tokenizer.tokenize(captions)))


# Jitted once per process (and shape): called eagerly, the RVQ's level scan was traced and
# compiled anew on every call, 0.13 s each, twice per clip when caching tokens.
_quantize_codes = jax.jit(lambda state, x, n_q: rvq.quantize(state, x, n_q)[1],
                          static_argnums=2)
_codes_to_vectors = jax.jit(rvq.codes_to_vectors)


@dataclasses.dataclass
class MuLanQuantizer:
  """The fitted RVQ: `state` is layers/rvq.py's codebook state (numpy)."""
  state: dict

  @property
  def num_levels(self) -> int:
    return self.state["codebook"].shape[0]

  @property
  def codebook_size(self) -> int:
    return self.state["codebook"].shape[1]

  @classmethod
  def fit(cls, embeddings, num_levels: int, codebook_size: int, rng, kmeans_iters: int = 20):
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.shape[0] < codebook_size:
      logging.warning("fitting %d codes per level on only %d embeddings: codes repeat",
                      codebook_size, embeddings.shape[0])
    state = rvq.fit_state(jnp.asarray(embeddings), num_levels, codebook_size, rng, kmeans_iters)
    return cls(jax.tree.map(np.asarray, state))

  def tokens(self, embeddings, n_q: Optional[int] = None) -> np.ndarray:
    """`[batch, dim]` -> int32 `[batch, n_q]` codes of the first n_q levels (default all)."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or embeddings.shape[1] != self.state["codebook"].shape[2]:
      raise ValueError(f"the quantizer takes [batch, {self.state['codebook'].shape[2]}] "
                       f"embeddings, got {embeddings.shape}")
    return np.array(_quantize_codes(self.state, jnp.asarray(embeddings), n_q), np.int32)

  def vectors(self, codes) -> np.ndarray:
    """int `[batch, n_q]` -> `[batch, dim]`, the sum of the first n_q levels' entries."""
    return np.array(_codes_to_vectors(self.state, jnp.asarray(codes)))

  def save(self, path) -> None:
    files.save_npz(path, **self.state)

  @classmethod
  def load(cls, path) -> "MuLanQuantizer":
    return cls(files.load_npz(path, _STATE_KEYS, "MuLan quantizer",
                              "python -m musiclm_jax.fit_mulan_rvq"))


class MuLanTokenizer:
  """Frozen MuLan + fitted RVQ: audio or captions -> int32 `[batch, num_levels]` codes."""

  def __init__(self, embedder: MuLanEmbedder, quantizer: MuLanQuantizer):
    if quantizer.state["codebook"].shape[2] != embedder.model.config.embed_dim:
      raise ValueError(f"the quantizer's dimension {quantizer.state['codebook'].shape[2]} is "
                       f"not MuLan's embed_dim {embedder.model.config.embed_dim}")
    self.embedder, self.quantizer = embedder, quantizer

  @classmethod
  def from_model_dir(cls, model_dir, model: MuLanModel, rvq_file: Optional[str] = None,
                     step: Optional[int] = None):
    quantizer = MuLanQuantizer.load(rvq_file or rvq_path(model_dir))  # fails fast
    return cls(MuLanEmbedder.from_model_dir(model_dir, model, step), quantizer)

  def audio_to_tokens(self, wav) -> np.ndarray:
    return self.quantizer.tokens(self.embedder.embed_audio(wav))

  def text_to_tokens(self, captions) -> np.ndarray:
    return self.quantizer.tokens(self.embedder.embed_text(captions))


@gin.configurable(module="mulan_tokenizer")
def mulan_levels(layout: token_layout.TokenLayout = token_layout.PAPER) -> int:
  """For gin: levels and codebook come from the token layout, never retyped."""
  return layout.mulan_levels


@gin.configurable(module="mulan_tokenizer")
def mulan_codebook_size(layout: token_layout.TokenLayout = token_layout.PAPER) -> int:
  return layout.mulan_codebook_size


@gin.configurable(module="mulan_tokenizer")
def fit_rvq(*, model: MuLanModel, model_dir: str, dataset_cfg: trainer.DatasetConfig,
            num_levels: int, codebook_size: int, num_examples: int = 8192,
            kmeans_iters: int = 20, checkpoint_step: Optional[int] = None,
            output_path: Optional[str] = None, log_every: int = 10, seed: int = 0) -> str:
  """Fits the MuLan RVQ on audio embeddings of up to `num_examples` clips of `dataset_cfg`
  (windowed as in `MuLanEmbedder`) and writes it (default `{model_dir}/mulan_rvq.npz`).
  Returns the path."""
  for name, value in (("num_levels", num_levels), ("codebook_size", codebook_size),
                      ("num_examples", num_examples), ("kmeans_iters", kmeans_iters)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"fit_rvq.{name} must be a positive integer, got {value!r}")
  if jax.process_count() > 1:
    # The embedder feeds each process's own host batches to jit; fitting is cheap (one
    # embedding per clip), so one process does it.
    raise ValueError(f"fit_rvq runs in one process, got {jax.process_count()}; run it on one "
                     "host (--num_processes=1)")
  output_path = output_path or rvq_path(model_dir)
  mesh = partitioning.create_mesh()
  rules = partitioning.logical_axis_rules()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params = restore_params(model, model_dir, step=checkpoint_step, mesh=mesh, rules=rules)
    embedder = MuLanEmbedder(model, params)
    iterator = input_pipeline.DatasetIterator(
        trainer.make_dataset(dataset_cfg, model.FEATURE_CONVERTER_CLS))
    embeddings, count = [], 0
    for step, batch in enumerate(iterator):
      embeddings.append(embedder.embed_audio(batch["audio"]))
      count += embeddings[-1].shape[0]
      if (step + 1) % log_every == 0:
        logging.info("embedded %d / %d clips", count, num_examples)
      if count >= num_examples:
        break
  if not embeddings:
    raise ValueError(f"{dataset_cfg.mixture_or_task_name} ({dataset_cfg.split}) yielded no "
                     f"batch of {dataset_cfg.batch_size} to fit the MuLan RVQ on")
  embeddings = np.concatenate(embeddings)[:num_examples]
  quantizer = MuLanQuantizer.fit(embeddings, num_levels, codebook_size,
                                 jax.random.key(seed), kmeans_iters)
  quantizer.save(output_path)
  logging.info("Wrote %s: %d levels x %d codes fitted on %d audio embeddings", output_path,
               num_levels, codebook_size, embeddings.shape[0])
  return output_path
