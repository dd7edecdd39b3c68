"""Token-level generation beyond one training crop: sliding windows, story mode, continuation.

Works in code space (`semantic [B, T]`, `acoustic [B, T, Q]`, `mulan [B, Lm]`); the stage
vocabularies turn codes into ids and back. Each stage samples windows of its training crop
(AudioLM-style), conditioning every window on the tail of what it already produced:

- semantic: first window the whole crop, then windows that keep `context_seconds` (paper:
  15 s of a 30 s crop) and add the rest;
- coarse: windows over the semantic stream, each continuing the previous coarse output;
- fine: non-overlapping chunks of the crop (paper: 3 s), each from its coarse codes only.

Story mode is a list of `(mulan codes, seconds)` segments: a window uses the segment in force
where its new frames start, so the conditioning changes every segment.
"""
import dataclasses
import math
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musiclm_jax.core import checkpoints, partitioning
from musiclm_jax.stages import token_layout
from musiclm_jax.stages.stage_model import DecoderOnlyModel

_FEATURES = ("decoder_input_tokens", "decoder_causal_attention")


def abstract_params(model: DecoderOnlyModel, mesh: Mesh, rules) -> object:
  """A stage's parameters as ShapeDtypeStructs carrying the shardings the logical rules give
  them on `mesh` (nothing is allocated): what a checkpoint is restored into and what the
  sampling step is compiled for."""
  boxed = jax.eval_shape(lambda rng: model.get_initial_variables(
      rng, {"decoder_input_tokens": (1, 8)}), jax.random.key(0))["params"]
  shardings = partitioning.logical_to_shardings(mesh, boxed, rules)
  return checkpoints.abstract_with_shardings(nn.meta.unbox(boxed), shardings)


@dataclasses.dataclass(frozen=True, eq=False)
class StageSampler:
  """One trained stage: samples target ids after given input ids (+ a target prefix).

  Frozen: the sampling parameters are compiled in, so other settings need a new sampler.
  The step runs on `mesh` (default: the first device) under the logical `rules` (default:
  partitioning.logical_axis_rules()): parameters are placed as the rules shard them, the
  batch is split over the mesh's data and fsdp axes, and the KV cache follows the attention
  activations' constraints (batch over data x fsdp, heads over model).
  """
  model: DecoderOnlyModel
  params: object
  decoder_params: Optional[dict] = None
  mesh: Optional[Mesh] = None
  rules: Optional[Sequence] = None

  def __post_init__(self):
    mesh = self.mesh if self.mesh is not None else partitioning.create_mesh(
        (1, 1, 1), jax.devices()[:1])
    rules = partitioning.logical_axis_rules() if self.rules is None else tuple(self.rules)
    shardings = jax.tree.map(lambda x: x.sharding, abstract_params(self.model, mesh, rules))
    batch = NamedSharding(mesh, PartitionSpec(partitioning.BATCH_AXES))
    replicated = partitioning.replicated(mesh)
    for name, value in (("mesh", mesh), ("rules", rules), ("_replicated", replicated),
                        ("params", jax.device_put(self.params, shardings))):
      object.__setattr__(self, name, value)
    object.__setattr__(self, "_sample", jax.jit(
        self._sample_impl, static_argnums=3,
        in_shardings=(shardings, {k: batch for k in _FEATURES}, replicated), out_shardings=batch))

  @property
  def stage(self) -> token_layout.StageVocabulary:
    return self.model.stage

  @property
  def batch_multiple(self) -> int:
    """Rows the batch is padded to a multiple of: the devices it is split over."""
    return math.prod(self.mesh.shape[a] for a in partitioning.BATCH_AXES)

  def _sample_impl(self, params, inputs, rng, max_new):
    return self.model.predict_batch_with_aux(
        params, inputs, rng, prompt_with_targets=True,
        decoder_params=dict(self.decoder_params or {}, max_decode_steps=max_new))[0]

  def sample(self, input_ids: np.ndarray, prefix_ids: np.ndarray, num_new: int, rng,
             num_targets: Optional[int] = None) -> np.ndarray:
    """`input_ids [B, n]`, `prefix_ids [B, k]` -> the next `num_new` target ids `[B, num_new]`.

    The sequence is sized for `num_targets` target ids (default k + num_new) + EOS, so windows
    of one crop share one compiled program whatever their prefix length. A batch the mesh's
    batch axes do not divide is padded with copies of its last row, which are dropped: a
    row's random draws depend on its index alone (threefry is partitionable), so the real
    rows sample what they would unpadded.
    """
    batch, n = input_ids.shape
    k = prefix_ids.shape[1]
    num_targets = k + num_new if num_targets is None else num_targets
    if k + num_new > num_targets:
      raise ValueError(f"prefix {k} + new {num_new} exceeds the window of {num_targets} targets")
    length = n + num_targets + 1
    padded = -(-batch // self.batch_multiple) * self.batch_multiple
    rows = np.minimum(np.arange(padded), batch - 1)
    decoder_inputs = np.zeros((padded, length), np.int32)
    decoder_inputs[:, 1:n + 1] = np.asarray(input_ids)[rows]
    decoder_inputs[:, n + 1:n + 1 + k] = np.asarray(prefix_ids)[rows]
    causal = np.zeros((padded, length), np.int32)
    causal[:, :n + 1] = 1
    features = dict(zip(_FEATURES, (decoder_inputs, causal)))
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      out = self._sample(self.params, features, jax.device_put(rng, self._replicated), num_new)
    return np.asarray(out)[:batch, :num_new]


@dataclasses.dataclass(frozen=True)
class Window:
  """What one sampling window did, in frames: read the prefix `[start, prefix_end)` and
  produced `[prefix_end, end)`."""
  start: int
  prefix_end: int
  end: int


def plan_windows(total: int, window: int, context: int, produced: int = 0,
                 align_last_to_end: bool = True) -> list[Window]:
  """Windows covering frames `[produced, total)`. Each keeps up to `context` frames of what
  precedes it; the last one is moved back to end at `total` (longer prefix, same shape) when
  `align_last_to_end`."""
  if not 0 <= context < window:
    raise ValueError(f"context ({context} frames) must be in [0, window={window})")
  windows = []
  while produced < total:
    start = max(0, produced - context) if produced else 0
    if align_last_to_end and total >= window:
      start = max(0, min(start, total - window))
    end = min(start + window, total)
    windows.append(Window(start, produced, end))
    produced = end
  return windows


class SegmentedConditioning:
  """Story mode: MuLan codes per segment, looked up by frame at a stream's rate."""

  def __init__(self, segments: Sequence[tuple[np.ndarray, float]], rate_hz: float):
    if not segments:
      raise ValueError("story mode needs at least one (mulan codes, seconds) segment")
    self.codes = [np.asarray(c) for c, _ in segments]
    self.ends = np.cumsum([round(s * rate_hz) for _, s in segments])

  @property
  def total_frames(self) -> int:
    return int(self.ends[-1])

  def at(self, frame: int) -> np.ndarray:
    index = min(int(np.searchsorted(self.ends, frame, side="right")), len(self.codes) - 1)
    return self.codes[index]


def _ids(stage: token_layout.StageVocabulary, stream: str, codes, levels=None):
  return stage.encode(stream, np.asarray(codes), levels)


def generate_semantic(sampler: StageSampler, layout: token_layout.TokenLayout,
                      story: Sequence[tuple[np.ndarray, float]], rng,
                      prompt: Optional[np.ndarray] = None, crop_seconds: Optional[float] = None,
                      context_seconds: Optional[float] = None,
                      on_window: Optional[Callable[[Window], None]] = None) -> np.ndarray:
  """Semantic codes `[B, T]` for the whole story (T = total seconds x 25 Hz), continuing
  `prompt [B, T0]` if given. Defaults: the stage's crop, half of it as context (paper §6)."""
  stage = sampler.stage
  crop = stage.crop_seconds if crop_seconds is None else crop_seconds
  window = layout.frames("semantic", crop)
  context = window // 2 if context_seconds is None else layout.frames("semantic", context_seconds)
  conditioning = SegmentedConditioning(story, layout.semantic_rate_hz)
  batch = conditioning.codes[0].shape[0]
  produced = np.zeros((batch, 0), np.int32) if prompt is None else np.asarray(prompt, np.int32)
  for w in plan_windows(conditioning.total_frames, window, context, produced.shape[1]):
    rng, step = jax.random.split(rng)
    inputs = _ids(stage, "mulan", conditioning.at(w.prefix_end))
    prefix = _ids(stage, "semantic", produced[:, w.start:w.prefix_end, None])
    new = sampler.sample(inputs, prefix, w.end - w.prefix_end, step, num_targets=window)
    produced = np.concatenate([produced, stage.decode("semantic", new)[..., 0]], 1)
    if on_window:
      on_window(w)
  return produced


def generate_coarse(sampler: StageSampler, layout: token_layout.TokenLayout,
                    story: Sequence[tuple[np.ndarray, float]], semantic: np.ndarray, rng,
                    prompt: Optional[np.ndarray] = None, crop_seconds: Optional[float] = None,
                    context_seconds: Optional[float] = None,
                    on_window: Optional[Callable[[Window], None]] = None) -> np.ndarray:
  """Coarse acoustic codes `[B, Ta, coarse_levels]` over `semantic [B, Ts]`, windows of the
  crop sliding over the semantic stream, each continuing the coarse output before it."""
  stage = sampler.stage
  coarse = layout.levels("acoustic", "coarse")
  crop = stage.crop_seconds if crop_seconds is None else crop_seconds
  per_semantic = layout.frame_rate("acoustic") // layout.frame_rate("semantic")
  window = layout.frames("acoustic", crop)
  context = window // 2 if context_seconds is None else layout.frames("acoustic", context_seconds)
  # Windows start on semantic frame boundaries so both streams crop the same span.
  window, context = window - window % per_semantic, context - context % per_semantic
  conditioning = SegmentedConditioning(story, layout.acoustic_rate_hz)
  total = semantic.shape[1] * per_semantic
  batch = semantic.shape[0]
  produced = (np.zeros((batch, 0, len(coarse)), np.int32) if prompt is None
              else np.asarray(prompt, np.int32))
  for w in plan_windows(total, window, context, produced.shape[1]):
    rng, step = jax.random.split(rng)
    inputs = np.concatenate([
        _ids(stage, "mulan", conditioning.at(w.prefix_end)),
        _ids(stage, "semantic", semantic[:, w.start // per_semantic:w.end // per_semantic, None])], 1)
    prefix = _ids(stage, "acoustic", produced[:, w.start:w.prefix_end], coarse)
    new = sampler.sample(inputs, prefix, (w.end - w.prefix_end) * len(coarse), step,
                         num_targets=(w.end - w.start) * len(coarse))
    produced = np.concatenate([produced, stage.decode("acoustic", new, coarse)], axis=1)
    if on_window:
      on_window(w)
  return produced


def generate_fine(sampler: StageSampler, layout: token_layout.TokenLayout, coarse_codes: np.ndarray,
                  rng, crop_seconds: Optional[float] = None,
                  on_window: Optional[Callable[[Window], None]] = None) -> np.ndarray:
  """Fine codes `[B, Ta, fine_levels]` from coarse `[B, Ta, coarse_levels]`, in
  non-overlapping chunks of the crop (paper §3.2)."""
  stage = sampler.stage
  coarse, fine = layout.levels("acoustic", "coarse"), layout.levels("acoustic", "fine")
  crop = stage.crop_seconds if crop_seconds is None else crop_seconds
  window = layout.frames("acoustic", crop)
  chunks = []
  for w in plan_windows(coarse_codes.shape[1], window, 0, align_last_to_end=False):
    rng, step = jax.random.split(rng)
    inputs = _ids(stage, "acoustic", coarse_codes[:, w.start:w.end], coarse)
    empty = np.zeros((coarse_codes.shape[0], 0), np.int32)
    new = sampler.sample(inputs, empty, (w.end - w.start) * len(fine), step)
    chunks.append(stage.decode("acoustic", new, fine))
    if on_window:
      on_window(w)
  return np.concatenate(chunks, axis=1)


def acoustic_codes(coarse_codes: np.ndarray, fine_codes: np.ndarray) -> np.ndarray:
  """All levels `[B, T, Q]` for the codec's decoder."""
  return np.concatenate([coarse_codes, fine_codes], axis=-1)
