"""Stage tasks: the semantic, coarse and fine sequences built from any token-stream task.

A token-stream task yields code-space streams per clip — `mulan [Lm]`, `semantic [Ts]`,
`acoustic [Ta, Q]` (+ `id`) — whether synthetic or pre-tokenized audio cached by seqio.
`register_stage_tasks(token_task, stage, ...)` registers, by name,

  <token_task>_<stage>        random grid-aligned crops (training)
  <token_task>_<stage>_eval   crops from 0 (evaluation, inference: deterministic)

with `inputs` = ids of what the stage reads and `targets` = ids of what it writes + EOS,
frame-major (token_layout.StageVocabulary), ready for seqio's PrefixLM feature converter.

A token task over captioned clips also carries `mulan_text [Lm]`, the MuLan codes of the
clip's caption. The paper conditions training on the audio codes only and relies on MuLan's
shared space to make text codes stand in for them at inference; a small MuLan's two towers
leave a gap, so `mulan_text_conditioning.rate` of the training crops condition on the
caption's codes instead (0 by default, as in the paper; evaluation crops always use audio).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import gin
import seqio
import tensorflow as tf

from musiclm_jax.stages import token_layout


def _crop_grid(stage: token_layout.StageVocabulary, crop_seconds: float):
    """Frames per crop step for each timed stream, and crop length in steps.

    Crops start on a common grid (1 / gcd(rates) s) so every stream's crop
    starts and ends on a frame boundary: aligned crops cover the same span.
    """
    layout = stage.layout
    timed = sorted({s for s, _ in stage.reads + stage.writes if s in token_layout.TIMED_STREAMS})
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


def _encode_tf(stage: token_layout.StageVocabulary, stream: str, codes, levels):
    """tf mirror of StageVocabulary.encode: int [F, Q_all] codes -> int32 [F * len(levels)] ids."""
    size = stage.layout.codebook_size(stream)
    picked = tf.gather(codes, list(levels), axis=-1)
    checks = [tf.debugging.assert_non_negative(picked, message=f"negative {stream} code"),
              tf.debugging.assert_less(picked, size, message=f"{stream} code >= {size}")]
    with tf.control_dependencies(checks):
        ids = picked + tf.constant([stage.offset(stream, q) for q in levels], tf.int32)
    return tf.reshape(ids, [-1])


@gin.configurable(module="tasks")
def mulan_text_conditioning(rate: float = 0.0) -> float:
    """The share of training crops whose MuLan conditioning is their caption's text codes
    (where the token task has them); read when a stage dataset is built."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"tasks.mulan_text_conditioning.rate must be in [0, 1], got {rate}")
    return float(rate)


def stage_preprocessor(stage_name: str, layout: token_layout.TokenLayout, crop_seconds: float,
                       random_crop: bool) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """Token streams -> {"inputs", "targets"(, "id")} ids for one stage.

    Takes mulan [Lm], semantic [Ts], acoustic [Ta, Q] codes (and mulan_text
    [Lm] where the clips had captions); crops the timed streams to the same
    `crop_seconds` span (a random grid-aligned start when random_crop, else 0),
    then concatenates the ids of what the stage reads (inputs) and writes
    (targets), each frame-major. Random crops condition on mulan_text at the
    rate `mulan_text_conditioning` gives.
    """
    stage = layout.stage(stage_name)
    per_step, crop_steps = _crop_grid(stage, crop_seconds)
    reads_mulan = any(s == "mulan" for s, _ in stage.reads)

    def mulan_codes(ex, text_rate, seed):
        if not (reads_mulan and text_rate > 0 and "mulan_text" in ex):
            return ex["mulan"]
        use_text = tf.random.stateless_uniform([], seed) < text_rate
        return tf.where(use_text, ex["mulan_text"], ex["mulan"])

    def crop_and_encode(ex, text_rate=0.0, seeds=None):
        crop_seed, text_seed = (None, None) if seeds is None else (seeds[0], seeds[1])
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
                tf.random.stateless_uniform([], crop_seed, 0, max_start + 1, dtype=tf.int32)
                if random_crop else tf.constant(0))
        codes = {"mulan": mulan_codes(ex, text_rate, text_seed)[None, :]}  # one frame per clip
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

    def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
        if not random_crop:
            return seqio.map_over_dataset(crop_and_encode)(dataset)
        text_rate = mulan_text_conditioning()
        return seqio.map_over_dataset(num_seeds=2)(
            lambda ex, seeds: crop_and_encode(ex, text_rate, seeds))(dataset)

    preprocess.__name__ = f"{stage_name}_stage_preprocessor"
    return preprocess


def stage_output_features(stage_name: str, layout: token_layout.TokenLayout) -> dict[str, seqio.Feature]:
    vocab = seqio.PassThroughVocabulary(size=layout.stage(stage_name).vocab_size,
                                        eos_id=token_layout.EOS_ID)
    return {"inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
            "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32)}


def stage_feature_lengths(stage_name: str, layout: token_layout.TokenLayout, crop_seconds: float,
                          add_eos: bool = True) -> dict[str, int]:
    """Exact task feature lengths of a stage example (targets + 1 for EOS)."""
    stage = layout.stage(stage_name)

    def length(entries):
        return sum(len(q) * (1 if s == "mulan" else layout.frames(s, crop_seconds))
                   for s, q in entries)

    return {"inputs": length(stage.reads), "targets": length(stage.writes) + int(add_eos)}



def stage_task_name(token_task: str, stage_name: str, eval_crop: bool = False) -> str:
    return f"{token_task}_{stage_name}" + ("_eval" if eval_crop else "")


def _token_task_source(token_task: str) -> seqio.FunctionDataSource:
    """Reads the token-stream task by name; a task that must be cached is read from its cache."""
    upstream = seqio.get_mixture_or_task(token_task)

    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed  # the stage task shuffles examples itself
        return upstream.get_dataset(sequence_length=None, split=split, shuffle=False,
                                    num_epochs=1, use_cached=upstream.requires_caching)

    return seqio.FunctionDataSource(dataset_fn, splits=tuple(upstream.splits))


def register_stage_tasks(token_task: str, stage_name: str, layout: token_layout.TokenLayout,
                         crop_seconds: Optional[float] = None) -> tuple[str, str]:
    """Registers the training and eval stage tasks over `token_task` (idempotent).

    crop_seconds defaults to the stage's paper crop (token_layout.STAGES). Returns both names.
    """
    crop = layout.stage(stage_name).crop_seconds if crop_seconds is None else crop_seconds
    names = []
    for eval_crop in (False, True):
        name = stage_task_name(token_task, stage_name, eval_crop)
        if name not in seqio.TaskRegistry.names():
            seqio.TaskRegistry.add(
                name, source=_token_task_source(token_task),
                preprocessors=[stage_preprocessor(stage_name, layout, crop, random_crop=not eval_crop),
                               seqio.preprocessors.append_eos_after_trim],
                output_features=stage_output_features(stage_name, layout))
        names.append(name)
    return names[0], names[1]


# For gin: `TASK_FEATURE_LENGTHS = @tasks.stage_feature_lengths()`, derived, never typed.
gin.external_configurable(stage_feature_lengths, module="tasks")
gin.external_configurable(stage_task_name, module="tasks")
