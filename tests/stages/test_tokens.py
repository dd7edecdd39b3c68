"""Token layout: vocab sizes, frame counts, id ranges and code<->id round trips."""
import dataclasses

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from musiclm_jax.stages import token_layout
from musiclm_jax.stages.token_layout import PAPER, STAGE_NAMES, TINY, TokenLayout

LAYOUTS = {"paper": PAPER, "tiny": TINY}
STAGE_STREAMS = [(layout_name, stage, stream)
                 for layout_name in LAYOUTS for stage in STAGE_NAMES
                 for stream in token_layout.STREAMS
                 if stream in {s for s, _ in LAYOUTS[layout_name].stage(stage).reads
                               + LAYOUTS[layout_name].stage(stage).writes}]


def test_paper_stage_vocab_sizes_match_the_design():
    assert PAPER.stage("semantic").vocab_size == 2 + 12 * 1024 + 1024 == 13314
    assert PAPER.stage("coarse").vocab_size == 2 + 12288 + 1024 + 4 * 1024 == 17410
    assert PAPER.stage("fine").vocab_size == 2 + 12 * 1024 == 12290


def test_paper_rates_and_level_split():
    assert PAPER.acoustic_rate_hz == 50.0
    assert PAPER.semantic_rate_hz == 25.0
    assert PAPER.fine_levels == 8
    assert TINY.acoustic_rate_hz == 50.0 and TINY.semantic_rate_hz == 25.0


def test_frames_gives_the_paper_crop_lengths():
    assert PAPER.frames("semantic", 30) == 750
    assert PAPER.frames("acoustic", 10) == 500
    assert PAPER.frames("acoustic", 10) * PAPER.coarse_levels == 2000
    assert PAPER.frames("acoustic", 3) == 150
    assert PAPER.frames("semantic", 10) == 250


def test_frames_rejects_fractional_frame_counts_and_untimed_streams():
    with pytest.raises(ValueError, match="whole"):
        PAPER.frames("semantic", 0.01)
    with pytest.raises(ValueError, match="mulan"):
        PAPER.frames("mulan", 1.0)


def test_stage_table_carries_paper_crop_seconds():
    assert [PAPER.stage(n).crop_seconds for n in STAGE_NAMES] == [30.0, 10.0, 3.0]


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_id_ranges_are_disjoint_contiguous_and_skip_specials(layout, stage_name):
    stage = layout.stage(stage_name)
    ranges = []
    for stream, levels in stage.reads + stage.writes:
        ranges += stage.level_ranges(stream, levels)
    ranges.sort()
    assert ranges[0][0] == token_layout.NUM_SPECIAL_IDS
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        assert hi == lo  # contiguous and non-overlapping
    assert ranges[-1][1] == stage.vocab_size
    assert all(lo > token_layout.EOS_ID and token_layout.PAD_ID < lo for lo, _ in ranges)


def _codes_strategy(layout, stage, stream):
    levels = stage.stream_levels(stream)
    size = layout.codebook_size(stream)
    shape = (st.tuples(st.integers(0, 2), st.just(len(levels))) if stream == "mulan"
             else st.tuples(st.integers(0, 2), st.integers(0, 6), st.just(len(levels))))
    return hnp.arrays(np.int32, shape, elements=st.integers(0, size - 1))


@pytest.mark.parametrize("layout_name,stage_name,stream", STAGE_STREAMS)
@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(data=st.data())
def test_encode_then_decode_returns_the_codes(layout_name, stage_name, stream, data):
    layout = LAYOUTS[layout_name]
    stage = layout.stage(stage_name)
    codes = data.draw(_codes_strategy(layout, stage, stream))
    ids = stage.encode(stream, codes)
    levels = stage.stream_levels(stream)
    expected_len = len(levels) if stream == "mulan" else codes.shape[-2] * len(levels)
    assert ids.shape == codes.shape[:-2 if stream != "mulan" else -1] + (expected_len,)
    if ids.size:
        assert ids.min() >= token_layout.NUM_SPECIAL_IDS and ids.max() < stage.vocab_size
    np.testing.assert_array_equal(stage.decode(stream, ids), codes)


def test_encode_is_frame_major():
    stage = PAPER.stage("coarse")
    codes = np.array([[[1, 2, 3, 4], [5, 6, 7, 8]]])
    offsets = [stage.offset("acoustic", q) for q in range(4)]
    expected = [c + offsets[i % 4] for i, c in enumerate([1, 2, 3, 4, 5, 6, 7, 8])]
    np.testing.assert_array_equal(stage.encode("acoustic", codes), [expected])


def test_encode_with_explicit_level_subset_round_trips():
    stage = PAPER.stage("fine")
    codes = np.arange(3 * 2).reshape(3, 2)
    ids = stage.encode("acoustic", codes, levels=[0, 5])
    assert ids[0] == stage.offset("acoustic", 0) and ids[1] == stage.offset("acoustic", 5) + 1
    np.testing.assert_array_equal(stage.decode("acoustic", ids, levels=[0, 5]), codes)


def test_encode_rejects_out_of_range_codes_naming_stream_and_level():
    stage = TINY.stage("coarse")
    with pytest.raises(ValueError, match="acoustic level 1"):
        stage.encode("acoustic", np.array([[0, 64]]))
    with pytest.raises(ValueError, match="semantic level 0"):
        stage.encode("semantic", np.array([[-1]]))


def test_encode_rejects_levels_or_streams_the_stage_lacks():
    with pytest.raises(ValueError, match="acoustic level 5"):
        TINY.stage("coarse").encode("acoustic", np.zeros((1, 1)), levels=[5])
    with pytest.raises(ValueError, match="no semantic"):
        TINY.stage("fine").encode("semantic", np.zeros((1, 1)))
    with pytest.raises(ValueError, match="shape"):
        TINY.stage("coarse").encode("semantic", np.zeros((5,), np.int32))


def test_decode_rejects_ids_of_the_wrong_level_naming_the_position():
    stage = PAPER.stage("coarse")
    ids = stage.encode("acoustic", np.zeros((3, 4), np.int32))
    ids[5] = ids[4]  # a level-0 id where level 1 belongs
    with pytest.raises(ValueError, match="position 5.*acoustic level 1"):
        stage.decode("acoustic", ids)
    with pytest.raises(ValueError, match="position 0"):
        stage.decode("semantic", np.array([token_layout.EOS_ID]))


def test_decode_rejects_length_not_a_multiple_of_levels():
    with pytest.raises(ValueError, match="multiple"):
        PAPER.stage("coarse").decode("acoustic", np.zeros(7, np.int32))


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_allowed_ids_mask_allows_exactly_one_level_per_position(stage_name):
    stage = TINY.stage(stage_name)
    for stream, levels in stage.writes:
        mask = stage.allowed_ids_mask(stream, levels, num_positions=7)
        assert mask.shape == (7, stage.vocab_size)
        np.testing.assert_array_equal(mask.sum(-1), TINY.codebook_size(stream))
        assert not mask[:, :token_layout.NUM_SPECIAL_IDS].any()
        for p in range(7):
            lo, hi = stage.level_ranges(stream, [levels[p % len(levels)]])[0]
            assert mask[p, lo:hi].all()


def test_allowed_ids_mask_accepts_exactly_the_encoded_ids():
    stage = TINY.stage("fine")
    codes = np.random.default_rng(0).integers(0, 64, (5, 2))
    ids = stage.encode("acoustic", codes, levels=[2, 3])
    mask = stage.allowed_ids_mask("acoustic", [2, 3], len(ids))
    assert mask[np.arange(len(ids)), ids].all()


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(hnp.arrays(np.int32, hnp.array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=4)))
def test_flatten_then_unflatten_is_identity(codes):
    flat = token_layout.flatten_codes(codes)
    assert flat.shape == codes.shape[:-2] + (codes.shape[-2] * codes.shape[-1],)
    if codes.shape[-1]:
        np.testing.assert_array_equal(token_layout.unflatten_codes(flat, codes.shape[-1]), codes)


def test_flatten_and_unflatten_accept_jax_arrays():
    codes = jnp.arange(2 * 3 * 4).reshape(2, 3, 4)
    flat = token_layout.flatten_codes(codes)
    assert isinstance(flat, jnp.ndarray) and flat.shape == (2, 12)
    assert (token_layout.unflatten_codes(flat, 4) == codes).all()


def test_unflatten_rejects_length_not_divisible_by_levels():
    with pytest.raises(ValueError, match="multiple of 4"):
        token_layout.unflatten_codes(np.zeros((2, 10)), 4)


@pytest.mark.parametrize("field,value", [
    ("acoustic_levels", 0), ("mulan_codebook_size", -3), ("semantic_hop", 2.5),
    ("acoustic_hop", True)])
def test_non_positive_or_non_int_fields_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TokenLayout(**{field: value})


def test_coarse_levels_must_leave_fine_levels():
    with pytest.raises(ValueError, match="coarse_levels"):
        dataclasses.replace(TINY, coarse_levels=4)


def test_hop_must_divide_sample_rate():
    with pytest.raises(ValueError, match="acoustic_hop"):
        TokenLayout(acoustic_hop=7)


def test_unknown_stage_and_stream_raise():
    with pytest.raises(ValueError, match="stage"):
        PAPER.stage("medium")
    with pytest.raises(ValueError, match="stream"):
        PAPER.stage("fine").offset("video", 0)


def test_gin_binds_token_layout_fields():
    import gin
    # A private scope so these bindings cannot leak into other tests' configs.
    with gin.unlock_config():
        gin.parse_config(["test_tokens/token_layout.TokenLayout.acoustic_levels = 8",
                          "test_tokens/token_layout.TokenLayout.coarse_levels = 3"])
    with gin.config_scope("test_tokens"):
        layout = gin.get_configurable("token_layout.TokenLayout")()
    assert (layout.acoustic_levels, layout.coarse_levels, layout.fine_levels) == (8, 3, 5)
    assert TokenLayout().acoustic_levels == 12  # direct Python calls stay unconfigured


def test_padded_vocab_sizes_divide_by_the_multiple_and_keep_every_id():
    for name in token_layout.STAGE_NAMES:
        ids = PAPER.stage(name).vocab_size
        padded = token_layout.padded_vocab_size(ids, 128)
        assert padded % 128 == 0 and ids <= padded < ids + 128
        assert token_layout.stage_vocab_size(name, PAPER, pad_to_multiple=128) == padded
        assert token_layout.stage_vocab_size(name, PAPER) == ids
    assert token_layout.padded_vocab_size(256, 128) == 256
    with pytest.raises(ValueError, match="pad_to_multiple"):
        token_layout.padded_vocab_size(10, 0)
