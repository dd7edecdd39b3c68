"""Synthetic token-stream tasks: the rule, the stage ids, and aligned crops."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from musiclm_jax.stages import token_layout
from musiclm_jax.stages.token_layout import TINY
from musiclm_jax.data import stage_tasks
from musiclm_jax.data import synthetic_tokens as syn

SECONDS = syn.DEFAULT_SECONDS
V = 64  # every TINY codebook


def _streams(split="validation"):
    task = seqio.get_mixture_or_task(syn.TOKEN_STREAMS_TASK)
    return list(task.get_dataset(None, split=split, shuffle=False).as_numpy_iterator())


def _by_id(examples):
    return {ex["id"]: ex for ex in examples}


def _cropped(stage_name, crop_seconds, random_crop, seed=123):
    task = seqio.get_mixture_or_task(syn.TOKEN_STREAMS_TASK)
    with seqio.map_seed_manager(seed):
        ds = stage_tasks.stage_preprocessor(stage_name, TINY, crop_seconds, random_crop)(
            task.get_dataset(None, split="validation", shuffle=False))
    return list(ds.as_numpy_iterator())


def _window_starts(full, window):
    """All s with full[s:s+len(window)] == window."""
    n = len(window)
    return [s for s in range(len(full) - n + 1) if np.array_equal(full[s:s + n], window)]


def test_tasks_are_registered_and_registration_is_idempotent():
    names = syn.register_synthetic_tasks()
    assert names == (syn.TOKEN_STREAMS_TASK, syn.SEMANTIC_STAGE_TASK)
    assert set(names) <= set(seqio.TaskRegistry.names())
    with pytest.raises(ValueError, match="already registered"):
        syn.register_synthetic_tasks(seconds=2.0)


def test_token_streams_have_declared_shapes_and_follow_the_rule():
    examples = _streams()
    assert len(examples) == syn.NUM_EXAMPLES["validation"]
    for ex in examples:
        mulan, semantic, acoustic = ex["mulan"], ex["semantic"], ex["acoustic"]
        assert mulan.shape == (TINY.mulan_levels,) and mulan.dtype == np.int32
        assert semantic.shape == (TINY.frames("semantic", SECONDS),)
        assert acoustic.shape == (TINY.frames("acoustic", SECONDS), TINY.acoustic_levels)
        assert 0 <= mulan.min() and mulan.max() < V
        # Stated independently of syn.*_rule so the test pins the documented rule.
        np.testing.assert_array_equal(semantic, mulan[np.arange(len(semantic)) % len(mulan)] % V)
        t = np.arange(len(acoustic))
        for q in range(TINY.acoustic_levels):
            np.testing.assert_array_equal(acoustic[:, q], (semantic[t // 2] * (q + 1) + q) % V)


def test_splits_are_deterministic_and_drawn_from_disjoint_seeds():
    first, second = _streams("validation"), _streams("validation")
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    train = _streams("train")
    assert len(train) == syn.NUM_EXAMPLES["train"]
    assert not set(_by_id(train)) & set(_by_id(first))
    # Same index, different split seed -> different clip.
    assert not np.array_equal(train[0]["mulan"], first[0]["mulan"])


def test_semantic_stage_ids_decode_back_to_the_token_streams():
    stage = TINY.stage("semantic")
    lengths = stage_tasks.stage_feature_lengths("semantic", TINY, SECONDS)
    assert lengths == {"inputs": TINY.mulan_levels, "targets": TINY.frames("semantic", SECONDS) + 1}
    task = seqio.get_mixture_or_task(syn.SEMANTIC_STAGE_TASK)
    streams = _by_id(_streams())
    for ex in task.get_dataset(lengths, split="validation", shuffle=False).as_numpy_iterator():
        source = streams[ex["id"]]
        assert ex["inputs"].shape == (lengths["inputs"],)
        assert ex["targets"].shape == (lengths["targets"],) and ex["targets"][-1] == token_layout.EOS_ID
        assert ex["inputs"].max() < stage.vocab_size and ex["targets"].max() < stage.vocab_size
        np.testing.assert_array_equal(stage.decode("mulan", ex["inputs"]), source["mulan"])
        np.testing.assert_array_equal(stage.decode("semantic", ex["targets"][:-1])[:, 0],
                                      source["semantic"])


def _prefix_lm_batches(seed):
    lengths = stage_tasks.stage_feature_lengths("semantic", TINY, SECONDS)
    ds = seqio.get_dataset(syn.SEMANTIC_STAGE_TASK, lengths,
                           seqio.PrefixLMFeatureConverter(pack=False),
                           dataset_split="train", shuffle=True, seed=seed, batch_size=8)
    return list(ds.take(3).as_numpy_iterator()), lengths


def test_semantic_stage_through_prefix_lm_converter_gives_decoder_features():
    batches, lengths = _prefix_lm_batches(seed=7)
    n_in, n_out = lengths["inputs"], lengths["targets"]
    for batch in batches:
        assert set(batch) == {"decoder_input_tokens", "decoder_target_tokens",
                              "decoder_loss_weights", "decoder_causal_attention"}
        for feature in batch.values():
            assert feature.shape == (8, n_in + n_out)
        np.testing.assert_array_equal(batch["decoder_loss_weights"][:, :n_in], 0)
        np.testing.assert_array_equal(batch["decoder_loss_weights"][:, n_in:], 1)
        # Bidirectional over the inputs plus one position (the first target's input).
        np.testing.assert_array_equal(batch["decoder_causal_attention"][:, :n_in + 1], 1)
        np.testing.assert_array_equal(batch["decoder_causal_attention"][:, n_in + 1:], 0)
        np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 0], token_layout.PAD_ID)
        np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:],
                                      batch["decoder_target_tokens"][:, :-1])


def test_semantic_stage_reads_are_deterministic_for_a_seed():
    first, _ = _prefix_lm_batches(seed=11)
    second, _ = _prefix_lm_batches(seed=11)
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_coarse_crop_covers_the_same_span_in_semantic_and_acoustic():
    stage, crop = TINY.stage("coarse"), 1.0
    n_sem, n_ac = TINY.frames("semantic", crop), TINY.frames("acoustic", crop)
    streams, starts = _by_id(_streams()), set()
    for ex in _cropped("coarse", crop, random_crop=True):
        source = streams[ex["id"]]
        np.testing.assert_array_equal(stage.decode("mulan", ex["inputs"][:TINY.mulan_levels]),
                                      source["mulan"])
        semantic = stage.decode("semantic", ex["inputs"][TINY.mulan_levels:])[:, 0]
        coarse = stage.decode("acoustic", ex["targets"])
        assert semantic.shape == (n_sem,) and coarse.shape == (n_ac, TINY.coarse_levels)
        # Aligned: some start s has the semantic crop at s and the acoustic crop at 2s.
        aligned = [s for s in _window_starts(source["semantic"], semantic)
                   if np.array_equal(source["acoustic"][2 * s:2 * s + n_ac, :2], coarse)]
        assert aligned
        starts.add(aligned[0])
    assert len(starts) > 1  # the train crop really is random


def test_fine_crop_takes_coarse_and_fine_levels_of_the_same_frames():
    stage, crop = TINY.stage("fine"), 0.5
    n_ac = TINY.frames("acoustic", crop)
    streams = _by_id(_streams())
    for ex in _cropped("fine", crop, random_crop=True):
        full = streams[ex["id"]]["acoustic"]
        coarse = stage.decode("acoustic", ex["inputs"], TINY.levels("acoustic", "coarse"))
        fine = stage.decode("acoustic", ex["targets"], TINY.levels("acoustic", "fine"))
        assert coarse.shape == fine.shape == (n_ac, 2)
        window = np.concatenate([coarse, fine], axis=1)
        assert _window_starts(full, window)


def test_eval_crop_starts_at_the_clip_start():
    stage = TINY.stage("coarse")
    streams = _by_id(_streams())
    for ex in _cropped("coarse", 1.0, random_crop=False):
        source = streams[ex["id"]]
        np.testing.assert_array_equal(stage.decode("acoustic", ex["targets"]),
                                      source["acoustic"][:50, :2])


def test_stage_feature_lengths_match_the_paper_sequences():
    assert stage_tasks.stage_feature_lengths("semantic", token_layout.PAPER, 30) == {"inputs": 12, "targets": 751}
    assert stage_tasks.stage_feature_lengths("coarse", token_layout.PAPER, 10) == {"inputs": 262, "targets": 2001}
    assert stage_tasks.stage_feature_lengths("fine", token_layout.PAPER, 3) == {"inputs": 600, "targets": 1201}


def test_crop_that_is_not_a_whole_number_of_frames_is_rejected():
    with pytest.raises(ValueError, match="whole"):
        stage_tasks.stage_preprocessor("coarse", TINY, 0.03, random_crop=True)


def test_crop_longer_than_the_clip_fails_loudly():
    # Static clip lengths fail while tracing; dynamic ones when the example is read.
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="shorter than"):
        _cropped("semantic", SECONDS + 1.0, random_crop=False)


def _variable_length_clips(semantic_frames):
    """Clips whose lengths are unknown until read, like pre-tokenized audio."""
    def gen():
        for n in semantic_frames:
            t = np.arange(n, dtype=np.int32)
            yield {"mulan": np.zeros(4, np.int32), "semantic": t % V,
                   "acoustic": np.repeat(t % V, 2)[:, None].repeat(4, axis=1)}
    spec = {"mulan": tf.TensorSpec([4], tf.int32), "semantic": tf.TensorSpec([None], tf.int32),
            "acoustic": tf.TensorSpec([None, 4], tf.int32)}
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def test_variable_length_clips_crop_to_the_fixed_length_or_fail_when_too_short():
    prep = stage_tasks.stage_preprocessor("coarse", TINY, 1.0, random_crop=True)
    with seqio.map_seed_manager(0):
        examples = list(prep(_variable_length_clips([25, 40, 60])).as_numpy_iterator())
    assert [ex["targets"].shape for ex in examples] == [(100,)] * 3
    with seqio.map_seed_manager(0):
        too_short = prep(_variable_length_clips([24]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="shorter than"):
        list(too_short.as_numpy_iterator())
