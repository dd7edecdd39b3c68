"""Synthetic token streams with a learnable rule, as seqio Tasks.

Stands in for pre-tokenized audio so the stage models can be trained and
tested without any tokenizer: each clip's semantic stream is a deterministic
function of its MuLan codes, and its acoustic stream a deterministic function
of the semantic stream, so a stage model that learns the rule reaches ~zero
loss and a broken pipeline (offsets, alignment, masks) shows up as loss that
does not fall.

Importing this module registers, for the TINY layout:
  synthetic_token_streams                codes per clip: mulan [Lm], semantic [Ts], acoustic [Ta, Q]
  synthetic_token_streams_<stage>[_eval] the semantic / coarse / fine stage tasks (stage_tasks.py)
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional

import gin
import numpy as np
import seqio
import tensorflow as tf

from musiclm_jax.stages import token_layout
from musiclm_jax.data import stage_tasks

TOKEN_STREAMS_TASK = "synthetic_token_streams"
SEMANTIC_STAGE_TASK = "synthetic_token_streams_semantic"
# Stage crops as fractions of the clip: semantic the whole 4 s; coarse 1 s and fine 0.5 s keep
# sequences short enough (~130 / ~100 tokens) to train on CPU in a test.
CROP_FRACTIONS = {"semantic": 1.0, "coarse": 0.25, "fine": 0.125}
NUM_EXAMPLES = {"train": 512, "validation": 64}
# Stateless seeds are (split seed, clip index), so splits never share a seed.
SPLIT_SEEDS = {"train": 0, "validation": 1}
DEFAULT_SECONDS = 4.0


# --- the rule (arithmetic only, so numpy and tf tensors both work) ----------

def semantic_rule(mulan, t, codebook_size: int):
    """semantic[t] = mulan[t mod Lm] mod V: the MuLan codes, repeated.

    Every opening token must be read from the conditioning (a copy, which attention learns
    fast), so a stage that ignores its MuLan tokens is caught; later tokens may also be
    continued from the stream itself, as in real music. mulan: int [Lm]; t: int [T] -> [T].
    """
    return gather_codes(mulan, t % mulan.shape[-1]) % codebook_size


def gather_codes(codes, index):
    """codes[index] for numpy arrays and tf tensors alike."""
    if isinstance(codes, tf.Tensor):
        return tf.gather(codes, index)
    return np.asarray(codes)[np.asarray(index)]


def acoustic_rule(semantic_at_frame, q, codebook_size: int):
    """acoustic[t, q] = (s (q + 1) + q) mod V with s the semantic code under frame t.

    semantic_at_frame: int [T, 1]; q: int [1, Q] level indices -> int [T, Q].
    """
    return (semantic_at_frame * (q + 1) + q) % codebook_size


def semantic_frame_of(acoustic_frame, layout: token_layout.TokenLayout):
    """Index of the semantic frame that contains each acoustic frame (int arrays)."""
    return acoustic_frame * layout.frame_rate("semantic") // layout.frame_rate("acoustic")


# --- the source -------------------------------------------------------------

def _make_clip(split: str, index, layout: token_layout.TokenLayout, seconds: float):
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
                             layout: token_layout.TokenLayout, seconds: float,
                             num_examples: Mapping[str, int]) -> tf.data.Dataset:
    """seqio dataset_fn: clips in index order; the Task shuffles, so shuffle_files/seed are unused."""
    del shuffle_files, seed
    if split not in num_examples:
        raise ValueError(f"unknown split {split!r}; synthetic_token_streams has {sorted(num_examples)}")
    make = functools.partial(_make_clip, split, layout=layout, seconds=seconds)
    return tf.data.Dataset.range(num_examples[split]).map(make)


def token_stream_features(layout: token_layout.TokenLayout) -> dict[str, seqio.Feature]:
    """Code-space features (no id offsets, no EOS): vocab size = codebook size."""
    def feature(stream, rank):
        return seqio.Feature(seqio.PassThroughVocabulary(size=layout.codebook_size(stream)),
                             add_eos=False, dtype=tf.int32, rank=rank)
    return {"mulan": feature("mulan", 1), "semantic": feature("semantic", 1),
            "acoustic": feature("acoustic", 2)}


# --- registration -----------------------------------------------------------

_REGISTERED: dict[str, tuple] = {}


def _add_task_once(name: str, config: tuple, **task_kwargs) -> None:
    if name in _REGISTERED and _REGISTERED[name] != config:
        raise ValueError(f"seqio task {name!r} is already registered with {_REGISTERED[name]}; "
                         f"pass a different suffix to register {config}")
    _REGISTERED[name] = config
    if name not in seqio.TaskRegistry.names():
        seqio.TaskRegistry.add(name, **task_kwargs)


@gin.configurable(module="tasks")
def synthetic_crop_seconds(stage_name: str = gin.REQUIRED, seconds: float = DEFAULT_SECONDS) -> float:
    """The crop of a synthetic stage task; gin derives TASK_FEATURE_LENGTHS from it."""
    return seconds * CROP_FRACTIONS[stage_name]


def register_synthetic_tasks(layout: token_layout.TokenLayout = token_layout.TINY,
                             seconds: float = DEFAULT_SECONDS,
                             num_examples: Optional[Mapping[str, int]] = None,
                             suffix: str = "") -> tuple[str, str]:
    """Registers the token-stream task and its three stage tasks (+ `_eval`); idempotent.

    Crops: semantic the whole clip (so its first code stays predictable from MuLan), coarse
    and fine the CROP_FRACTIONS of it. Returns (streams task, semantic stage task).
    """
    num_examples = dict(num_examples or NUM_EXAMPLES)
    config = (layout, seconds, tuple(sorted(num_examples.items())))
    source = seqio.FunctionDataSource(
        functools.partial(token_streams_dataset_fn, layout=layout, seconds=seconds,
                          num_examples=num_examples),
        splits=tuple(num_examples), num_input_examples=num_examples)
    streams_name = TOKEN_STREAMS_TASK + suffix
    _add_task_once(streams_name, config, source=source, preprocessors=[],
                   output_features=token_stream_features(layout))
    for stage_name in token_layout.STAGE_NAMES:
        stage_tasks.register_stage_tasks(streams_name, stage_name, layout,
                                         synthetic_crop_seconds(stage_name, seconds))
    return streams_name, stage_tasks.stage_task_name(streams_name, "semantic")


register_synthetic_tasks()
