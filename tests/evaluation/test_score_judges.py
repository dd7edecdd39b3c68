"""The independent judges (basic-pitch transcription, musicnn instrument tags) on clips rendered
from a real score, where the answer is known: which notes, how many voices, which tempo and
instrument."""
import numpy as np
import pytest

from musiclm_jax.data import score_corpus
from musiclm_jax.data import score_render
from musiclm_jax.evaluation import instrument_tags
from musiclm_jax.evaluation import score_judges
from musiclm_jax.evaluation import transcription

RATE = 16000
SECONDS = 4.0
Note = score_render.Note


@pytest.fixture(scope="module")
def transcriber():
  return transcription.Transcriber.load()


@pytest.fixture(scope="module")
def chorale():
  """The first 16 quarters of BWV 66.6 (four voices), soprano first."""
  work = next(w for w in score_corpus.list_works("bach") if w.work_id == "bach/bwv66.6")
  return score_render.window(score_render.score_parts(score_corpus.parse(work)), 0, 16)


def _render(parts, program, bpm):
  wav = score_render.render(parts, [program] * len(parts), 60.0 / bpm, SECONDS, RATE)
  return score_render.set_level(wav, -20.0)


def test_transcribes_a_rendered_scale_note_for_note(transcriber):
  scale = [60, 62, 64, 65, 67, 69, 71, 72]
  wav = _render([[Note(i, i + 1, p, 90) for i, p in enumerate(scale)]], 40, 120)  # violin
  notes = transcriber.transcribe(wav, RATE)
  assert notes[:, 2].astype(int).tolist() == scale
  np.testing.assert_allclose(notes[:, 0], np.arange(8) * 0.5, atol=0.06)
  features = transcription.note_features(notes, SECONDS)
  assert (features["pitch_low"], features["pitch_high"]) == (60, 72)
  assert features["notes_per_second"] == 2.0 and features["polyphony"] < 1.1


def test_polyphony_counts_a_held_chord(transcriber):
  chord = [[Note(0, 8, p, 90)] for p in (60, 64, 67)]
  features = transcription.note_features(transcriber.transcribe(_render(chord, 0, 120), RATE),
                                         SECONDS)
  assert features["polyphony"] == pytest.approx(3.0, abs=0.3)


def test_note_features_of_silence_and_bad_input(transcriber):
  empty = transcription.note_features(transcriber.transcribe(np.zeros(RATE, np.float32), RATE),
                                      1.0)
  assert empty["notes_per_second"] == 0 and np.isnan(empty["register"])
  with pytest.raises(ValueError, match="finite, non-empty mono"):
    transcriber.transcribe(np.full(100, np.nan, np.float32), RATE)


def test_tempo_ranked_by_notes_per_second(transcriber, chorale):
  soprano = chorale[:1]
  clips, prompted = [], []
  for program in (0, 73, 40):  # piano, flute, violin
    for word, bpm in (("slow", 60), ("fast", 140)):
      clips.append(_render(soprano, program, bpm))
      prompted.append(word)
  features = transcription.clip_features(transcriber, clips, RATE)
  result = score_judges.transcription_following(features, prompted, "tempo")
  assert result["auc"] == 1.0 and result["feature"] == "notes_per_second"
  # The control: the same clips against prompts that ignore them score at chance.
  shuffled = score_judges.transcription_following(
      features, ["slow", "slow", "fast", "fast", "slow", "fast"], "tempo")
  assert shuffled["auc"] < 1.0


def test_judge_ranks_voices_and_instruments_against_shuffled_prompts(transcriber, chorale):
  clips, prompts = [], []
  for word, program in (("piano", 0), ("flute", 73), ("choir", 52)):
    for parts in (chorale[:1], chorale):
      clips.append(_render(parts, program, 90))
      prompts.append({"num_voices": len(parts), "instruments": [word]})
  tagger = instrument_tags.InstrumentTagger.load()
  result = score_judges.judge(clips, RATE, prompts, transcriber, tagger)
  assert result["num_voices"]["auc"] == 1.0
  per_word = {w: r["auc"] for w, r in result["instruments"]["per_word"].items()}
  assert per_word["piano"] == per_word["choir"] == 1.0, per_word
  # Four flutes in chorale harmony are tagged more piano than flute (and a single choir line
  # somewhat flute): the tagger's limit, which the word's ranking still clears.
  assert per_word["flute"] >= 0.75, per_word
  classification = result["instruments"]["classification"]
  assert classification["shuffled"] == pytest.approx(1 / 3)
  assert classification["matched"] >= 2 / 3, classification
  # A prompt may name its one instrument as a bare word.
  assert score_judges.judge(clips[0:3:2], RATE, [{"instruments": "piano"}, {"instruments": "flute"}],
                            transcriber, tagger)["instruments"]["per_word"]["piano"]["auc"] == 1.0
  with pytest.raises(ValueError, match="no transcription feature orders 'mood'"):
    score_judges.transcription_following([], [], "mood")
  with pytest.raises(ValueError, match="no prompt names an instrument"):
    score_judges.instrument_following({"piano": np.zeros(2)}, [["organ"], ["brass"]])
