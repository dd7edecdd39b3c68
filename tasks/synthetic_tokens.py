"""Synthetic token streams with a learnable rule, as seqio Tasks.

Stands in for pre-tokenized audio so the stage models can be trained and
tested without any tokenizer: each clip's semantic stream is a deterministic
function of its MuLan codes, and its acoustic stream a deterministic function
of the semantic stream, so a stage model that learns the rule reaches ~zero
loss and a broken pipeline (offsets, alignment, masks) shows up as loss that
does not fall.

Importing this module registers, for the TINY layout:
  synthetic_token_streams   codes per clip: mulan [Lm], semantic [Ts], acoustic [Ta, Q]
  synthetic_semantic_stage  inputs = MuLan ids, targets = semantic ids + EOS
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Optional

import gin
import seqio
import tensorflow as tf

from musiclm_jax import tokens

TOKEN_STREAMS_TASK = "synthetic_token_streams"
SEMANTIC_STAGE_TASK = "synthetic_semantic_stage"
NUM_EXAMPLES = {"train": 512, "validation": 64}
# Stateless seeds are (split seed, clip index), so splits never share a seed.
SPLIT_SEEDS = {"train": 0, "validation": 1}
# Few slopes keep the rule learnable by a tiny model from a handful of clips.
NUM_SLOPES = 3
DEFAULT_SECONDS = 4.0


# --- the rule (arithmetic only, so numpy and tf tensors both work) ----------

def semantic_rule(mulan, t, codebook_size: int):
    """semantic[t] = (a + b t) mod V, a = mulan[0] mod V, b = 1 + mulan[-1] mod 3.

    mulan: int [Lm] codes; t: int [T] frame indices -> int [T] codes.
    """
    a = mulan[0] % codebook_size
    b = 1 + mulan[-1] % NUM_SLOPES
    return (a + b * t) % codebook_size


def acoustic_rule(semantic_at_frame, q, codebook_size: int):
    """acoustic[t, q] = (s (q + 1) + q) mod V with s the semantic code under frame t.

    semantic_at_frame: int [T, 1]; q: int [1, Q] level indices -> int [T, Q].
    """
    return (semantic_at_frame * (q + 1) + q) % codebook_size


def semantic_frame_of(acoustic_frame, layout: tokens.TokenLayout):
    """Index of the semantic frame that contains each acoustic frame (int arrays)."""
    return acoustic_frame * layout.frame_rate("semantic") // layout.frame_rate("acoustic")


# --- the source -------------------------------------------------------------

def _make_clip(split: str, index, layout: tokens.TokenLayout, seconds: float):
    seed = tf.stack([tf.constant(SPLIT_SEEDS[split], tf.int64), index])
    mulan = tf.random.stateless_uniform(
        [layout.mulan_levels], seed, minval=0, maxval=layout.mulan_codebook_size, dtype=tf.int32)
    semantic = semantic_rule(mulan, tf.range(layout.frames("semantic", seconds)),
                             layout.semantic_codebook_size)
    under = tf.gather(semantic, semantic_frame_of(tf.range(layout.frames("acoustic", seconds)), layout))
    acoustic = acoustic_rule(under[:, None], tf.range(layout.acoustic_levels)[None, :],
                             layout.acoustic_codebook_size)
    clip_id = tf.strings.join([f"synthetic-{split}-", tf.strings.as_string(index, width=5, fill="0")])
    return {"mulan": mulan, "semantic": semantic, "acoustic": acoustic, "id": clip_id}


def token_streams_dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None, *,
                             layout: tokens.TokenLayout, seconds: float,
                             num_examples: Mapping[str, int]) -> tf.data.Dataset:
    """seqio dataset_fn: clips in index order; the Task shuffles, so shuffle_files/seed are unused."""
    del shuffle_files, seed
    if split not in num_examples:
        raise ValueError(f"unknown split {split!r}; synthetic_token_streams has {sorted(num_examples)}")
    make = functools.partial(_make_clip, split, layout=layout, seconds=seconds)
    return tf.data.Dataset.range(num_examples[split]).map(make)


def token_stream_features(layout: tokens.TokenLayout) -> dict[str, seqio.Feature]:
    """Code-space features (no id offsets, no EOS): vocab size = codebook size."""
    def feature(stream, rank):
        return seqio.Feature(seqio.PassThroughVocabulary(size=layout.codebook_size(stream)),
                             add_eos=False, dtype=tf.int32, rank=rank)
    return {"mulan": feature("mulan", 1), "semantic": feature("semantic", 1),
            "acoustic": feature("acoustic", 2)}


# --- token streams -> stage examples -----------------------------------------

def _crop_grid(stage: tokens.StageVocabulary, crop_seconds: float):
    """Frames per crop step for each timed stream, and crop length in steps.

    Crops start on a common grid (1 / gcd(rates) s) so every stream's crop
    starts and ends on a frame boundary: aligned crops cover the same span.
    """
    layout = stage.layout
    timed = sorted({s for s, _ in stage.reads + stage.writes if s in tokens.TIMED_STREAMS})
    common_rate = math.gcd(*(layout.frame_rate(s) for s in timed))
    per_step = {s: layout.frame_rate(s) // common_rate for s in timed}
    crop_steps = None
    for s in timed:
        frames = layout.frames(s, crop_seconds)
        if frames % per_step[s] or frames == 0:
            raise ValueError(f"crop_seconds={crop_seconds} must be a positive multiple of "
                             f"1/{common_rate} s so the {stage.name} stage's streams stay aligned")
        crop_steps = frames // per_step[s]
    return per_step, crop_steps


def _encode_tf(stage: tokens.StageVocabulary, stream: str, codes, levels):
    """tf mirror of StageVocabulary.encode: int [F, Q_all] codes -> int32 [F * len(levels)] ids."""
    size = stage.layout.codebook_size(stream)
    picked = tf.gather(codes, list(levels), axis=-1)
    checks = [tf.debugging.assert_non_negative(picked, message=f"negative {stream} code"),
              tf.debugging.assert_less(picked, size, message=f"{stream} code >= {size}")]
    with tf.control_dependencies(checks):
        ids = picked + tf.constant([stage.offset(stream, q) for q in levels], tf.int32)
    return tf.reshape(ids, [-1])


def stage_preprocessor(stage_name: str, layout: tokens.TokenLayout, crop_seconds: float,
                       random_crop: bool) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Token streams -> {"inputs", "targets"(, "id")} ids for one stage.

    Takes mulan [Lm], semantic [Ts], acoustic [Ta, Q] codes; crops the timed
    streams to the same `crop_seconds` span (a random grid-aligned start when
    random_crop, else 0), then concatenates the ids of what the stage reads
    (inputs) and writes (targets), each frame-major.
    """
    stage = layout.stage(stage_name)
    per_step, crop_steps = _crop_grid(stage, crop_seconds)

    def crop_and_encode(ex, seed=None):
        static = [ex[s].shape[0] for s in per_step]
        if None not in static and min(n // per_step[s] for s, n in zip(per_step, static)) < crop_steps:
            raise ValueError(f"clips of {dict(zip(per_step, static))} frames are shorter than "
                             f"the {crop_seconds} s {stage_name} crop")
        available = tf.reduce_min(tf.stack([tf.shape(ex[s])[0] // n for s, n in per_step.items()]))
        max_start = available - crop_steps
        check = tf.debugging.assert_non_negative(
            max_start, message=f"clip shorter than the {crop_seconds} s {stage_name} crop")
        with tf.control_dependencies([check]):
            # identity: a bare constant would not wait for the check.
            start = tf.identity(
                tf.random.stateless_uniform([], seed, 0, max_start + 1, dtype=tf.int32)
                if random_crop else tf.constant(0))
        codes = {"mulan": ex["mulan"][None, :]}  # one frame per clip
        for s, n in per_step.items():
            x = ex[s][:, None] if s == "semantic" else ex[s]
            codes[s] = tf.ensure_shape(x[start * n:(start + crop_steps) * n],
                                       [crop_steps * n, layout.num_levels(s)])

        def ids(entries):
            return tf.concat([_encode_tf(stage, s, codes[s], q) for s, q in entries], axis=0)

        out = {"inputs": ids(stage.reads), "targets": ids(stage.writes)}
        if "id" in ex:
            out["id"] = ex["id"]
        return out

    if random_crop:
        fn = seqio.map_over_dataset(num_seeds=1)(crop_and_encode)
    else:
        fn = seqio.map_over_dataset(crop_and_encode)
    fn.__name__ = f"{stage_name}_stage_preprocessor"
    return fn


def stage_output_features(stage_name: str, layout: tokens.TokenLayout) -> dict[str, seqio.Feature]:
    vocab = seqio.PassThroughVocabulary(size=layout.stage(stage_name).vocab_size,
                                        eos_id=tokens.EOS_ID)
    return {"inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
            "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32)}


def stage_feature_lengths(stage_name: str, layout: tokens.TokenLayout, crop_seconds: float,
                          add_eos: bool = True) -> dict[str, int]:
    """Exact task feature lengths of a stage example (targets + 1 for EOS)."""
    stage = layout.stage(stage_name)

    def length(entries):
        return sum(len(q) * (1 if s == "mulan" else layout.frames(s, crop_seconds))
                   for s, q in entries)

    return {"inputs": length(stage.reads), "targets": length(stage.writes) + int(add_eos)}


# --- registration -----------------------------------------------------------

_REGISTERED: dict[str, tuple] = {}


def _add_task_once(name: str, config: tuple, **task_kwargs) -> None:
    if name in _REGISTERED and _REGISTERED[name] != config:
        raise ValueError(f"seqio task {name!r} is already registered with {_REGISTERED[name]}; "
                         f"pass a different suffix to register {config}")
    _REGISTERED[name] = config
    if name not in seqio.TaskRegistry.names():
        seqio.TaskRegistry.add(name, **task_kwargs)


def register_synthetic_tasks(layout: tokens.TokenLayout = tokens.TINY,
                             seconds: float = DEFAULT_SECONDS,
                             num_examples: Optional[Mapping[str, int]] = None,
                             semantic_crop_seconds: Optional[float] = None,
                             suffix: str = "") -> tuple[str, str]:
    """Registers the token-stream and semantic-stage tasks; idempotent.

    semantic_crop_seconds defaults to the whole clip, so the crop always
    starts at 0 and the first semantic code stays predictable from MuLan.
    Returns the two task names.
    """
    num_examples = dict(num_examples or NUM_EXAMPLES)
    crop = seconds if semantic_crop_seconds is None else semantic_crop_seconds
    config = (layout, seconds, tuple(sorted(num_examples.items())), crop)
    source = seqio.FunctionDataSource(
        functools.partial(token_streams_dataset_fn, layout=layout, seconds=seconds,
                          num_examples=num_examples),
        splits=tuple(num_examples), num_input_examples=num_examples)
    streams_name, stage_name = TOKEN_STREAMS_TASK + suffix, SEMANTIC_STAGE_TASK + suffix
    _add_task_once(streams_name, config, source=source, preprocessors=[],
                   output_features=token_stream_features(layout))
    _add_task_once(stage_name, config, source=source,
                   preprocessors=[stage_preprocessor("semantic", layout, crop, random_crop=True),
                                  seqio.preprocessors.append_eos_after_trim],
                   output_features=stage_output_features("semantic", layout))
    return streams_name, stage_name


register_synthetic_tasks()

# For gin: `TASK_FEATURE_LENGTHS = @tasks.stage_feature_lengths()`, derived, never typed.
gin.external_configurable(stage_feature_lengths, module="tasks")
