"""Token layout: rates, vocabulary sizes, id offsets and RVQ flattening.

The single source of truth for how MuLan, semantic and acoustic codes become
the integer ids a stage Transformer reads and writes. Everything is derived
from one `TokenLayout`; no other module types an offset or a vocabulary size.

Vocabulary of a stage: ids 0 (PAD) and 1 (EOS) are seqio's specials, then each
(stream, RVQ level) the stage reads or writes gets its own contiguous range,
allocated in table order: id = offset(stream, level) + code.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import gin
import numpy as np

# seqio.PassThroughVocabulary's convention; PAD doubles as the BOS the feature
# converters shift in, so no code may ever map onto these ids.
PAD_ID = 0
EOS_ID = 1
NUM_SPECIAL_IDS = 2

STREAMS = ("mulan", "semantic", "acoustic")
# Streams with a frame rate; MuLan is one embedding per clip.
TIMED_STREAMS = ("semantic", "acoustic")

# What each stage reads (its conditioning, the prefix) and writes (its
# targets). Level groups are names resolved by `TokenLayout.levels`, so the
# table stays data while the number of levels follows the config.
# crop_seconds is the paper's training crop (Agostinelli et al., 2023, Sec. 3.3).
STAGES: Mapping[str, Mapping[str, object]] = {
    "semantic": {
        "reads": (("mulan", "all"),),
        "writes": (("semantic", "all"),),
        "crop_seconds": 30.0,
    },
    "coarse": {
        "reads": (("mulan", "all"), ("semantic", "all")),
        "writes": (("acoustic", "coarse"),),
        "crop_seconds": 10.0,
    },
    "fine": {
        "reads": (("acoustic", "coarse"),),
        "writes": (("acoustic", "fine"),),
        "crop_seconds": 3.0,
    },
}
STAGE_NAMES = tuple(STAGES)


def _check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Tokenizer rates and codebooks; defaults are the paper's configuration."""

    acoustic_sample_rate: int = 24000
    acoustic_hop: int = 480  # SoundStream total stride -> 50 Hz
    acoustic_levels: int = 12
    acoustic_codebook_size: int = 1024
    coarse_levels: int = 4  # levels [0, coarse_levels) are coarse, the rest fine
    semantic_sample_rate: int = 16000
    semantic_hop: int = 640  # w2v-BERT: 16 kHz -> 25 Hz
    semantic_codebook_size: int = 1024
    mulan_levels: int = 12
    mulan_codebook_size: int = 1024

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            # bool is an int subclass but never a meaningful size.
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TokenLayout.{field.name} must be a positive int, got {value!r}")
        if self.coarse_levels >= self.acoustic_levels:
            raise ValueError(
                f"TokenLayout.coarse_levels ({self.coarse_levels}) must be < "
                f"acoustic_levels ({self.acoustic_levels}) so the fine stage has levels to write")
        # Integral frame rates keep frames() exact and make every crop that is
        # whole in seconds-per-frame land on frame boundaries of both streams.
        for stream in TIMED_STREAMS:
            rate = getattr(self, f"{stream}_sample_rate")
            hop = getattr(self, f"{stream}_hop")
            if rate % hop:
                raise ValueError(
                    f"TokenLayout.{stream}_hop ({hop}) must divide {stream}_sample_rate "
                    f"({rate}) so the {stream} frame rate is a whole number of Hz")

    @property
    def acoustic_rate_hz(self) -> float:
        return float(self.acoustic_sample_rate // self.acoustic_hop)

    @property
    def semantic_rate_hz(self) -> float:
        return float(self.semantic_sample_rate // self.semantic_hop)

    @property
    def fine_levels(self) -> int:
        return self.acoustic_levels - self.coarse_levels

    def num_levels(self, stream: str) -> int:
        _check_stream(stream)
        return {"mulan": self.mulan_levels, "semantic": 1,
                "acoustic": self.acoustic_levels}[stream]

    def codebook_size(self, stream: str) -> int:
        _check_stream(stream)
        return getattr(self, f"{stream}_codebook_size")

    def frame_rate(self, stream: str) -> int:
        """Frames per second of a timed stream, as an exact int."""
        if stream not in TIMED_STREAMS:
            raise ValueError(f"stream {stream!r} has no frame rate; expected one of {TIMED_STREAMS}")
        return getattr(self, f"{stream}_sample_rate") // getattr(self, f"{stream}_hop")

    def levels(self, stream: str, group: str = "all") -> tuple[int, ...]:
        """RVQ level indices of a named group: 'all', or 'coarse'/'fine' for acoustic."""
        n = self.num_levels(stream)
        if group == "all":
            return tuple(range(n))
        if stream == "acoustic" and group == "coarse":
            return tuple(range(self.coarse_levels))
        if stream == "acoustic" and group == "fine":
            return tuple(range(self.coarse_levels, n))
        raise ValueError(f"unknown level group {group!r} for stream {stream!r}")

    def frames(self, stream: str, seconds: float) -> int:
        """Number of frames of `stream` in `seconds`; raises if not a whole number."""
        rate = self.frame_rate(stream)
        exact = seconds * rate
        n = round(exact)
        if n < 0 or not math.isclose(exact, n, rel_tol=0.0, abs_tol=1e-6):
            raise ValueError(
                f"{seconds} s is {exact} {stream} frames at {rate} Hz; need a whole, "
                "non-negative number of frames")
        return int(n)

    def stage(self, name: str) -> "StageVocabulary":
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; expected one of {STAGE_NAMES}")
        spec = STAGES[name]

        def resolve(entries):
            return tuple((stream, self.levels(stream, group)) for stream, group in entries)

        return StageVocabulary(name=name, layout=self, reads=resolve(spec["reads"]),
                               writes=resolve(spec["writes"]),
                               crop_seconds=float(spec["crop_seconds"]))


# register (not configurable) so direct Python calls such as PAPER/TINY and
# dataclasses.replace are never silently changed by a gin file; gin files use
# `@token_layout.TokenLayout()` with `token_layout.TokenLayout.acoustic_levels = ...`.
gin.register(TokenLayout, module="token_layout")

Ranges = tuple[tuple[str, tuple[int, ...]], ...]


@dataclasses.dataclass(frozen=True)
class StageVocabulary:
    """The id space of one stage model.

    reads / writes: ((stream, levels), ...) in allocation order; the
    conditioning prefix is the reads, the targets the writes.
    """

    name: str
    layout: TokenLayout
    reads: Ranges
    writes: Ranges
    crop_seconds: float
    _offsets: Mapping[tuple[str, int], int] = dataclasses.field(
        init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        offsets = {}
        next_id = NUM_SPECIAL_IDS
        for stream, levels in self.reads + self.writes:
            for level in levels:
                if (stream, level) in offsets:
                    raise ValueError(f"stage {self.name!r} lists {stream} level {level} twice")
                offsets[(stream, level)] = next_id
                next_id += self.layout.codebook_size(stream)
        object.__setattr__(self, "_offsets", offsets)

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL_IDS + sum(self.layout.codebook_size(s) for s, _ in self._offsets)

    def stream_levels(self, stream: str) -> tuple[int, ...]:
        """All levels of `stream` this stage reads or writes, ascending."""
        _check_stream(stream)
        levels = self._levels_present(stream)
        if not levels:
            raise ValueError(f"stage {self.name!r} has no {stream} tokens")
        return levels

    def offset(self, stream: str, level: int) -> int:
        _check_stream(stream)
        try:
            return self._offsets[(stream, int(level))]
        except KeyError:
            raise ValueError(
                f"stage {self.name!r} has no id range for {stream} level {level}; "
                f"it has {stream} levels {self._levels_present(stream)}") from None

    def _levels_present(self, stream):
        return tuple(sorted(q for s, q in self._offsets if s == stream))

    def _resolve(self, stream: str, levels: Optional[Sequence[int]]) -> tuple[int, ...]:
        levels = self.stream_levels(stream) if levels is None else tuple(int(q) for q in levels)
        for q in levels:
            self.offset(stream, q)  # validates
        return levels

    def level_ranges(self, stream: str, levels: Optional[Sequence[int]] = None) -> list[tuple[int, int]]:
        """[lo, hi) id range of each level, in the order given."""
        size = self.layout.codebook_size(stream)
        return [(self.offset(stream, q), self.offset(stream, q) + size)
                for q in self._resolve(stream, levels)]

    def encode(self, stream: str, codes, levels: Optional[Sequence[int]] = None) -> np.ndarray:
        """Codes to ids, frame-major.

        codes: int [..., frames, Q] (mulan: [..., Q]) with Q = len(levels).
        Returns int32 [..., frames * Q] (mulan: [..., Q]).
        """
        levels = self._resolve(stream, levels)
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"{stream} codes must be integers, got dtype {codes.dtype}")
        min_rank = 1 if stream == "mulan" else 2
        if codes.ndim < min_rank or codes.shape[-1] != len(levels):
            want = "[..., levels]" if stream == "mulan" else "[..., frames, levels]"
            raise ValueError(f"{stream} codes of shape {codes.shape} do not match {want} "
                             f"with {len(levels)} levels {levels}")
        size = self.layout.codebook_size(stream)
        for i, q in enumerate(levels):
            bad = (codes[..., i] < 0) | (codes[..., i] >= size)
            if bad.any():
                raise ValueError(f"{stream} level {q} has code {codes[..., i][bad].flat[0]} "
                                 f"outside [0, {size})")
        offsets = np.array([self.offset(stream, q) for q in levels], dtype=np.int64)
        ids = (codes.astype(np.int64) + offsets).astype(np.int32)
        return ids if stream == "mulan" else flatten_codes(ids)

    def decode(self, stream: str, ids, levels: Optional[Sequence[int]] = None) -> np.ndarray:
        """Inverse of `encode`: int [..., frames * Q] ids -> int32 [..., frames, Q] codes."""
        levels = self._resolve(stream, levels)
        ids = np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer) or ids.ndim < 1:
            raise ValueError(f"{stream} ids must be an integer array of rank >= 1, "
                             f"got dtype {ids.dtype} shape {ids.shape}")
        if stream == "mulan" and ids.shape[-1] != len(levels):
            raise ValueError(f"mulan ids of shape {ids.shape} do not match [..., levels] "
                             f"with {len(levels)} levels {levels}")
        per_level = ids[..., None, :] if stream == "mulan" else unflatten_codes(ids, len(levels))
        offsets = np.array([self.offset(stream, q) for q in levels], dtype=np.int64)
        codes = per_level.astype(np.int64) - offsets
        bad = (codes < 0) | (codes >= self.layout.codebook_size(stream))
        if bad.any():
            where = np.argwhere(bad)[0]
            frame, i = int(where[-2]), int(where[-1])
            position = frame * len(levels) + i
            lo, hi = self.level_ranges(stream, [levels[i]])[0]
            raise ValueError(
                f"{stream} id {int(per_level[tuple(where)])} at position {position} "
                f"(batch index {tuple(int(w) for w in where[:-2])}) is not in "
                f"{stream} level {levels[i]}'s range [{lo}, {hi})")
        codes = codes.astype(np.int32)
        return codes[..., 0, :] if stream == "mulan" else codes

    def allowed_ids_mask(self, stream: str, levels: Optional[Sequence[int]],
                         num_positions: int) -> np.ndarray:
        """bool [num_positions, vocab_size]: position p may emit only level levels[p % Q]'s ids."""
        ranges = self.level_ranges(stream, levels)
        per_level = np.zeros((len(ranges), self.vocab_size), dtype=bool)
        for i, (lo, hi) in enumerate(ranges):
            per_level[i, lo:hi] = True
        return per_level[np.arange(num_positions) % len(ranges)]


def flatten_codes(codes):
    """[..., T, Q] -> [..., T*Q], frame-major; numpy or jax arrays."""
    *batch, t, q = codes.shape
    return codes.reshape(*batch, t * q)


def unflatten_codes(flat, num_levels: int):
    """[..., T*Q] -> [..., T, Q]; inverse of `flatten_codes`."""
    *batch, n = flat.shape
    if n % num_levels:
        raise ValueError(f"sequence length {n} is not a multiple of {num_levels} levels")
    return flat.reshape(*batch, n // num_levels, num_levels)


PAPER = TokenLayout()


def tiny() -> TokenLayout:
    """A layout small enough for CPU tests and the demo; same 25/50 Hz rates as the paper."""
    return TokenLayout(
        acoustic_sample_rate=16000, acoustic_hop=320, acoustic_levels=4,
        acoustic_codebook_size=64, coarse_levels=2, semantic_sample_rate=16000,
        semantic_hop=640, semantic_codebook_size=64, mulan_levels=4,
        mulan_codebook_size=64)


gin.register(tiny, module="token_layout")
TINY = tiny()


def padded_vocab_size(vocab_size: int, pad_to_multiple: int = 1) -> int:
    """`vocab_size` rounded up to a multiple of `pad_to_multiple`.

    A model axis shards the embedding and logits over the vocabulary, so the paper stages'
    13,314 / 17,410 / 12,290 ids (not multiples of 4) would refuse a model axis of 4 or more.
    The ids past the stage's own never occur as targets, and sampling masks them out.
    """
    if pad_to_multiple <= 0:
        raise ValueError(f"pad_to_multiple must be positive, got {pad_to_multiple}")
    return -(-vocab_size // pad_to_multiple) * pad_to_multiple


@gin.configurable(module="token_layout")
def stage_vocab_size(stage: str = gin.REQUIRED, layout: TokenLayout = PAPER,
                     pad_to_multiple: int = 1) -> int:
    """For gin: `TransformerConfig.vocab_size = @token_layout.stage_vocab_size()`: the stage's
    ids, padded (padded_vocab_size) to a multiple any model axis of the run divides."""
    return padded_vocab_size(layout.stage(stage).vocab_size, pad_to_multiple)


@gin.configurable(module="token_layout")
def stage_vocabulary(stage: str = gin.REQUIRED, layout: TokenLayout = PAPER) -> StageVocabulary:
    """For gin: `stage_model.DecoderOnlyModel.stage = @token_layout.stage_vocabulary()`."""
    return layout.stage(stage)
