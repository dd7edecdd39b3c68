"""Instrument tags from the musicnn MagnaTagATune tagger: an independent judge of timbre.

MTT_musicnn (musicnn.py, the released weights) has a tag for eleven instrument words the
captions of rendered_scores use or a prompt may: piano, strings, violin, cello, flute, guitar,
harp, harpsichord, sitar, choir, drums. A clip's probability of a word is the tagger's sigmoid
for its tag, averaged over the clip's 3 s patches (choir also takes the "choral" tag: MTT
uses both for the same sound).

The tagger was trained on recordings, not on this soundfont, and texture matters: on TimGM6mb
renders of the first bars of BWV 66.6 (tests/evaluation/test_score_judges.py) piano and choir
rank perfectly, while four flutes in harmony are tagged more piano than flute and a single
choir line partly flute. Read a word's ranking with that in mind, and check a word on renders
before trusting it (strings, violin, cello and guitar are near neighbours in MTT's tags).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from musiclm_jax.core import audio
from musiclm_jax.evaluation import musicnn

# Instrument word -> the MTT tags whose mean probability stands for it.
WORD_TAGS = {
    "piano": ("piano",), "strings": ("strings",), "violin": ("violin",), "cello": ("cello",),
    "flute": ("flute",), "guitar": ("guitar",), "harp": ("harp",),
    "harpsichord": ("harpsichord",), "sitar": ("sitar",), "choir": ("choir", "choral"),
    "drums": ("drums",),
}
WORDS = tuple(WORD_TAGS)


class InstrumentTagger:
  """`probabilities(clips, rate) -> {word: [n]}` with the MTT musicnn tagger."""

  def __init__(self, tagger: musicnn.MusicnnTagger):
    labels = list(tagger.labels)
    missing = sorted({t for tags in WORD_TAGS.values() for t in tags} - set(labels))
    if missing:
      raise ValueError(f"the {tagger.name} tagger has no tag(s) {missing}; instrument words "
                       "need MTT_musicnn")
    self.tagger = tagger
    self._columns = {w: [labels.index(t) for t in tags] for w, tags in WORD_TAGS.items()}

  @classmethod
  def load(cls, checkpoint_dir=None) -> "InstrumentTagger":
    return cls(musicnn.MusicnnTagger.load("MTT_musicnn", checkpoint_dir))

  def probabilities(self, clips: Sequence[np.ndarray], sample_rate: int) -> dict[str, np.ndarray]:
    """{word: [len(clips)]} mean tag probabilities; every clip needs >= 3 s of audio."""
    rows = []
    for index, clip in enumerate(clips):
      wav = np.asarray(clip, np.float32)
      if wav.ndim != 1 or not np.all(np.isfinite(wav)):
        raise ValueError(f"clip {index}: need a finite mono clip, got shape {wav.shape}")
      wav = audio.resample(wav, sample_rate, musicnn.SAMPLE_RATE)
      try:
        rows.append(self.tagger.taggram(wav).mean(axis=0))
      except ValueError as error:
        raise ValueError(f"clip {index}: {error}") from None
    tags = np.stack(rows)
    return {w: tags[:, columns].mean(axis=1) for w, columns in self._columns.items()}
