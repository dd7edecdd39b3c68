"""rendered_scores: music21 corpus works on General MIDI instruments, captioned.

The registered `tiny` config (18 clips of 4 s) is built once per module; the score helpers
are checked on small scores written here, where the answer is known.
"""
import os
import re
import shutil

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from musiclm_jax.core import input_pipeline
from musiclm_jax.data import audio_tasks
from musiclm_jax.data import rendered_scores
from musiclm_jax.data import score_captions
from musiclm_jax.data import score_corpus
from musiclm_jax.data import score_render
from musiclm_jax.data import tfds_audio
from musiclm_jax.data import token_tasks

tfds.disable_progress_bar()
RATE = 16000


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  rendered_scores.ensure_built("tiny", path)
  return path


def _examples(data_dir, config="tiny"):
  builder = tfds.builder(f"rendered_scores/{config}:1.0.0", data_dir=data_dir)
  return {split: list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())
          for split in builder.info.splits}


def _text(value):
  return value.decode() if isinstance(value, bytes) else value


# --- scores -> notes ----------------------------------------------------------------------------

def _score(*parts, time_signature="4/4"):
  from music21 import meter, stream
  score = stream.Score()
  for part_elements in parts:
    part = stream.Part()
    part.append(meter.TimeSignature(time_signature))
    for element in part_elements:
      part.append(element)
    score.insert(0, part)
  return score


def test_part_notes_merge_ties_play_chords_and_drop_grace_and_percussion_notes():
  from music21 import chord, note, tie
  tied_a, tied_b = note.Note("C4", quarterLength=1), note.Note("C4", quarterLength=1)
  tied_a.tie, tied_b.tie = tie.Tie("start"), tie.Tie("stop")
  grace = note.Note("D5").getGrace()
  score = _score([tied_a, tied_b, grace, chord.Chord(["E4", "G4"], quarterLength=2)],
                 [note.Unpitched(quarterLength=4)], [note.Rest(quarterLength=4)])
  parts = score_render.score_parts(score)
  assert len(parts) == 1  # the percussion-only and the rest-only parts hold no pitched notes
  assert [(n.start, n.end, n.pitch) for n in parts[0]] == [(0.0, 2.0, 60), (2.0, 4.0, 64),
                                                          (2.0, 4.0, 67)]


def test_pitches_off_the_keyboard_fold_and_microtones_round():
  from music21 import note, pitch
  high = note.Note("C9")          # MIDI 120, above the piano
  quarter_sharp = note.Note(pitch.Pitch("C4", microtone=40))
  parts = score_render.score_parts(_score([high, quarter_sharp]))
  assert [n.pitch for n in parts[0]] == [108, 60]


def test_window_clips_notes_and_transpose_folds_onto_the_keyboard():
  notes = [[score_render.Note(0, 3, 60, 90), score_render.Note(3, 5, 107, 90)]]
  assert score_render.window(notes, 2, 4) == [[score_render.Note(0, 1, 60, 90),
                                               score_render.Note(1, 2, 107, 90)]]
  moved = score_render.transpose(notes, 4)
  assert [n.pitch for n in moved[0]] == [64, 99]  # 111 is off the keyboard: an octave down


def test_main_meter_ignores_pickup_and_odd_closing_bars():
  from music21 import converter
  abc = ("X:1\nT:Pickup Reel\nM:4/4\nL:1/8\nK:D\nA2|defg abag|fdec d2cB|[M:1/8]A|\n"
         "[M:4/4]defg abag|fdec d4|]\n")
  score = converter.parse(abc, format="abc")
  assert score_render.main_meter(score) == "4/4"
  assert score_render.beat_quarters("6/8") == 1.5 and score_render.beat_quarters("") == 1.0


def test_rendered_note_sounds_at_its_pitch_and_level():
  notes = [[score_render.Note(0, 8, 69, 100)]]  # A4 held through the clip
  for shift, hz in ((0, 440.0), (2, 493.88)):
    wav = score_render.set_level(
        score_render.render(score_render.transpose(notes, shift), [73], 0.25, 2.0, RATE), -20.0)
    assert wav.shape == (2 * RATE,) and wav.dtype == np.float32
    assert 20 * np.log10(np.sqrt(np.mean(wav.astype(np.float64) ** 2))) == pytest.approx(-20, abs=0.1)
    spectrum = np.abs(np.fft.rfft(wav[RATE // 4:]))
    peak = np.fft.rfftfreq(len(wav) - RATE // 4, 1 / RATE)[np.argmax(spectrum)]
    assert peak == pytest.approx(hz, rel=0.01)
  with pytest.raises(ValueError, match="2 parts but 1 programs"):
    score_render.render(notes * 2, [0], 0.5, 1.0, RATE)


def test_note_statistics_count_onsets_range_and_polyphony():
  parts = [[score_render.Note(0, 2, 72, 90), score_render.Note(2, 4, 74, 90)],
           [score_render.Note(0, 4, 48, 90)]]
  stats = score_render.note_statistics(parts, 0.5, 2.0)
  assert (stats["pitch_low"], stats["pitch_high"]) == (48, 74)
  assert stats["notes_per_second"] == 1.5 and stats["polyphony"] == pytest.approx(2.0)


# --- corpus and captions ------------------------------------------------------------------------

def test_list_works_splits_abc_books_and_keeps_one_encoding_per_work():
  bach = score_corpus.list_works("bach")
  ids = [w.work_id for w in bach]
  assert len(ids) == len(set(ids)) and "bach/bwv277" in ids
  assert next(w for w in bach if w.work_id == "bach/bwv277").path.endswith(".mxl")
  oneill = score_corpus.list_works("oneills1850")
  assert len(oneill) > 1000 and all(w.number is not None and w.title for w in oneill[:50])
  with pytest.raises(ValueError, match="no corpus folder 'nope'"):
    score_corpus.list_works("nope")


def test_describe_prefers_the_collection_and_survives_missing_metadata():
  from music21 import stream
  bare = stream.Score()  # no metadata at all
  work = score_corpus.Work("monteverdi/madrigal.3.1", "monteverdi", "x.mxl", None, "")
  assert score_corpus.describe(work, bare) == {
      "composer": "Monteverdi", "title": "madrigal.3.1", "form": "madrigal",
      "source": "by Monteverdi"}
  reel = score_corpus.Work("ryansMammoth/X", "ryansMammoth", "x.abc", None,
                           "The Rights of Man -- Hornpipe")
  assert score_corpus.describe(reel, bare)["form"] == "hornpipe"
  mass = score_corpus.Work("palestrina/Benedictus_23_a", "palestrina", "x.krn", None, "")
  assert score_corpus.describe(mass, bare)["form"] == "mass movement"  # from the file name
  unknown = score_corpus.Work("beach/x", "beach", "x.mxl", None, "")
  assert score_corpus.describe(unknown, bare)["source"] == "from the music21 corpus"
  assert score_corpus.title_form("Kyrie II") == "mass movement"
  assert score_corpus.title_form("Slip Jig in A") == "slip jig"


def test_ensembles_assign_top_and_bottom_parts_and_reject_unknown_programs():
  quartet = score_captions.ENSEMBLES_BY_NAME["string quartet"]
  assert quartet.assign(1) == [40] and quartet.assign(2) == [40, 42]
  assert quartet.assign(5) == [40, 40, 41, 41, 42]
  assert score_captions.ENSEMBLES_BY_NAME["flute and strings"].assign(4) == [73, 48, 48, 48]
  assert score_captions.instrument_words([40, 40, 41, 42]) == ["violin", "viola", "cello"]
  with pytest.raises(ValueError, match=r"programs \[99\]"):
    score_captions.Ensemble("bad", (0, 99))


# --- the built set ------------------------------------------------------------------------------

def test_tiny_build_splits_by_work_and_holds_out_collection_and_instruments(tiny_dir):
  examples = _examples(tiny_dir)
  assert {s: len(e) for s, e in examples.items()} == {"train": 8, "validation": 3, "heldout": 7}
  works = {s: {_text(e["work_id"]) for e in ex} for s, ex in examples.items()}
  assert not (works["train"] & works["validation"] or works["train"] & works["heldout"]
              or works["validation"] & works["heldout"])
  seen = {e.name for e in score_captions.ENSEMBLES}
  held = {e.name for e in score_captions.HELDOUT_ENSEMBLES}
  for split, exs in examples.items():
    for ex in exs:
      attributes = ex["attributes"]
      reason, ensemble = _text(attributes["heldout"]), _text(attributes["ensemble"])
      assert (split == "heldout") == bool(reason)
      assert (ensemble in held) == (reason == "instruments")
      assert ensemble in seen | held
      assert (reason == "collection") == (_text(attributes["collection"]) == "monteverdi")
  assert {_text(e["attributes"]["heldout"]) for e in examples["heldout"]} == {"collection",
                                                                               "instruments"}


def test_captions_name_what_was_rendered(tiny_dir):
  for exs in _examples(tiny_dir).values():
    for ex in exs:
      caption, a = _text(ex["caption"]), ex["attributes"]
      words = {_text(w) for w in a["instruments"]}
      assert score_captions.instruments_found(caption) == words, caption
      assert score_captions.tempo_found(caption) == {_text(a["tempo"])}, caption
      for field in ("form", "source", "meter"):
        assert _text(a[field]) in caption, (field, caption)
      assert f"{_text(a['key'])} {_text(a['mode'])}" in caption
      assert re.search(rf"\b{int(a['tempo_bpm'])} BPM", caption)
      assert len(a["programs"]) == a["num_voices"] >= 1


def test_clips_have_the_configured_length_level_and_notes(tiny_dir):
  config = rendered_scores.config_by_name("tiny")
  for exs in _examples(tiny_dir).values():
    for ex in exs:
      wav = tfds_audio.pcm_to_float(ex["audio"]).astype(np.float64)
      a = ex["attributes"]
      assert wav.shape == (int(config.seconds * RATE),)
      rms_db = 20 * np.log10(np.sqrt(np.mean(wav ** 2)))
      # The drawn level, unless the peak limiter had to pull a spiky render down.
      assert rms_db == pytest.approx(a["loudness_dbfs"], abs=0.2) or (
          rms_db < a["loudness_dbfs"] and np.max(np.abs(wav)) > 0.98)
      assert 21 <= a["pitch_low"] <= a["pitch_high"] <= 108 and a["notes_per_second"] > 0


def test_same_config_same_bytes(tmp_path):
  config = rendered_scores.RenderedScoresConfig(
      name="test_det", seconds=2.0, collections=("bach",), heldout_collections=(),
      works_per_collection=3, clips_per_work=2, validation_share=0.0,
      heldout_instrument_share=0.0)
  files = []
  for run in ("a", "b"):
    rendered_scores.ensure_built(config, tmp_path / run)
    folder = tmp_path / run / "rendered_scores" / "test_det" / "1.0.0"
    files.append({name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
                  if ".tfrecord" in name})
  assert files[0] and files[0] == files[1]


def test_bad_scores_are_skipped_counted_and_listed(tmp_path, monkeypatch):
  root = tmp_path / "corpus"
  (root / "bach").mkdir(parents=True)
  shutil.copy(os.path.join(score_corpus.corpus_root(), "bach", "bwv66.6.mxl"), root / "bach")
  (root / "bach" / "broken.mxl").write_bytes(b"not a zip at all")
  (root / "bach" / "rests.abc").write_text("X:1\nT:Rests\nM:4/4\nL:1/4\nK:C\nz4|z4|]\n")
  (root / "bach" / "short.abc").write_text("X:1\nT:Short\nM:4/4\nL:1/4\nK:C\nC D E F|]\n")
  monkeypatch.setattr(score_corpus, "corpus_root", lambda: str(root))
  config = rendered_scores.RenderedScoresConfig(
      name="test_bad", seconds=4.0, collections=("bach",), heldout_collections=(),
      clips_per_work=1, validation_share=0.0, heldout_instrument_share=0.0)
  rendered_scores.ensure_built(config, tmp_path / "tfds")
  builder = tfds.builder("rendered_scores/test_bad:1.0.0", data_dir=str(tmp_path / "tfds"))
  assert builder.info.splits["train"].num_examples == 1
  skipped = {e["id"]: e["reason"] for e in builder.info.metadata["skipped"]}
  assert skipped == {"bach/broken": "undecodable", "bach/rests": "empty",
                     "bach/short:0": "too_short"}
  assert builder.info.metadata["skipped_counts"] == {"undecodable": 1, "empty": 1,
                                                      "too_short": 1}


# --- tasks --------------------------------------------------------------------------------------

def test_pairs_task_reads_captions_and_normalised_crops(tiny_dir, monkeypatch):
  monkeypatch.setenv(audio_tasks.DATA_DIR_ENV, tiny_dir)
  dataset = input_pipeline.get_dataset(
      mixture_or_task_name="rendered_scores_pairs_tiny", task_feature_lengths={"audio": 8000},
      split="heldout", batch_size=2, feature_converter_cls=seqio.PassThroughFeatureConverter,
      shard_info=seqio.ShardInfo(0, 1))
  batch = next(iter(dataset))
  captions = {_text(e["caption"]) for e in _examples(tiny_dir)["heldout"]}
  assert {t.decode() for t in batch["text"].numpy()} <= captions
  rms_db = 20 * np.log10(np.sqrt(np.mean(batch["audio"].numpy().astype(np.float64) ** 2, 1)))
  np.testing.assert_allclose(rms_db, audio_tasks.TARGET_DBFS, atol=0.01)


def test_token_tasks_are_registered_with_clip_ids_and_tiny_crops():
  spec = token_tasks.rendered_scores_spec("demo")
  assert spec.id_key == "clip_id" and spec.caption_key == "caption"
  assert spec.crop_seconds == {"semantic": 4.0, "coarse": 1.0, "fine": 0.5}
  assert token_tasks.rendered_scores_spec("full_24k").sample_rate == 24000
  for name in ("rendered_scores_audio_demo", "rendered_scores_tokens_demo_semantic"):
    assert name in seqio.TaskRegistry.names()
  with pytest.raises(ValueError, match="unknown rendered_scores config 'nope'"):
    rendered_scores.config_by_name("nope")


def test_judges_read_a_built_split_with_its_captions_attributes(tiny_dir, monkeypatch):
  from musiclm_jax.evaluation import score_judges
  monkeypatch.setenv(audio_tasks.DATA_DIR_ENV, tiny_dir)
  clips, rate, attributes = score_judges.read_rendered_references(
      "rendered_scores/tiny", "validation", max_clips=2)
  examples = _examples(tiny_dir)["validation"][:2]
  assert rate == RATE and len(clips) == len(attributes) == 2
  for clip, a, ex in zip(clips, attributes, examples):
    np.testing.assert_array_equal(clip, tfds_audio.pcm_to_float(ex["audio"]))
    assert a == {"tempo": _text(ex["attributes"]["tempo"]),
                 "num_voices": int(ex["attributes"]["num_voices"]),
                 "instruments": [_text(w) for w in ex["attributes"]["instruments"]]}
  with pytest.raises(ValueError, match="has no split 'test'"):
    score_judges.read_rendered_references("rendered_scores/tiny", "test")
