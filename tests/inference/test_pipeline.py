"""MusicLM plumbing with untrained tiny parts: shapes, batching, seeds, long generation, story
mode, continuation and best-of-N reranking."""
import numpy as np
import pytest

from musiclm_jax.data import music_tokenizers
from tests import pipeline_helpers
from tests.pipeline_helpers import CROPS, LAYOUT

TEXTS = ["a calm piano melody", "loud drums and bass"]
RATE = LAYOUT.acoustic_sample_rate


@pytest.fixture(scope="module")
def music_lm():
  return pipeline_helpers.tiny_music_lm()


@pytest.fixture(scope="module")
def two_seconds(music_lm):
  return music_lm.generate(TEXTS, seconds=2.0, seed=0)


def test_a_batch_of_texts_becomes_a_batch_of_waveforms_longer_than_every_crop(two_seconds):
  out = two_seconds
  assert 2.0 > max(CROPS.values())
  assert out.wav.shape == (2, 2 * RATE) and out.wav.dtype == np.float32
  assert out.sample_rate == RATE and out.seconds == 2.0
  assert np.all(np.isfinite(out.wav)) and out.wav.std() > 0
  assert out.semantic.shape == (2, 50) and out.acoustic.shape == (2, 100, LAYOUT.acoustic_levels)
  assert out.mulan.shape == (2, 1, LAYOUT.mulan_levels)
  assert out.semantic.max() < LAYOUT.semantic_codebook_size
  assert out.acoustic.max() < LAYOUT.acoustic_codebook_size and out.acoustic.min() >= 0
  assert out.token_counts() == {"mulan": 4, "semantic": 50, "acoustic": 400}
  assert set(out.timings) >= {"mulan", "semantic", "coarse", "fine", "decode"}


def test_the_conditioning_is_the_quantised_text_embedding(music_lm, two_seconds):
  np.testing.assert_array_equal(two_seconds.mulan[:, 0], music_lm.text_tokens(TEXTS))


def test_the_seed_fixes_the_result_and_another_seed_changes_it(music_lm, two_seconds):
  again = music_lm.generate(TEXTS, seconds=2.0, seed=0)
  np.testing.assert_array_equal(again.acoustic, two_seconds.acoustic)
  np.testing.assert_array_equal(again.wav, two_seconds.wav)
  other = music_lm.generate(TEXTS, seconds=2.0, seed=1)
  assert not np.array_equal(other.semantic, two_seconds.semantic)


def test_the_waveform_is_the_codec_decoding_of_the_acoustic_tokens(music_lm, two_seconds):
  np.testing.assert_allclose(np.asarray(music_lm.codec.decode(two_seconds.acoustic)),
                             two_seconds.wav, atol=1e-6)


def test_story_mode_has_the_summed_length_and_one_conditioning_per_segment(music_lm):
  story = [(TEXTS, 0.8), ("soft strings", 1.2)]
  out = music_lm.generate_story(story, seed=3)
  assert out.semantic.shape == (2, 50) and out.wav.shape == (2, 2 * RATE)
  np.testing.assert_array_equal(out.mulan[:, 0], music_lm.text_tokens(TEXTS))
  np.testing.assert_array_equal(out.mulan[:, 1], music_lm.text_tokens(["soft strings"] * 2))
  with pytest.raises(ValueError, match="segment 1 has 3 texts"):
    music_lm.generate_story([(TEXTS, 1.0), (["a", "b", "c"], 1.0)])
  with pytest.raises(ValueError, match="segment 0 lasts"):
    music_lm.generate_story([(TEXTS, 0.0)])


def test_continuation_keeps_the_clip_tokens_and_adds_the_requested_seconds(music_lm,
                                                                            two_seconds):
  clip = two_seconds.wav[:, :int(1.01 * RATE)]  # not a whole number of frames: cut to 1.0 s
  semantic, acoustic = music_lm.tokenize_clip(clip, RATE)
  assert semantic.shape == (2, 25) and acoustic.shape == (2, 50, LAYOUT.acoustic_levels)
  # Coded at the level the tokenizers trained on: a quieter copy gives the same tokens.
  quiet_semantic, quiet_acoustic = music_lm.tokenize_clip(clip * 0.1, RATE)
  assert np.mean(quiet_semantic == semantic) > 0.95 and np.mean(quiet_acoustic == acoustic) > 0.95
  out = music_lm.continue_audio(clip, RATE, seconds=1.0, texts=["soft strings"], seed=2)
  assert out.prompt_frames == 25
  assert out.semantic.shape == (2, 50) and out.acoustic.shape == (2, 100, LAYOUT.acoustic_levels)
  np.testing.assert_array_equal(out.semantic[:, :25], semantic)
  np.testing.assert_array_equal(out.acoustic[:, :50], acoustic)
  assert out.wav.shape == (2, 2 * RATE)
  # Without a text the clip's own MuLan audio tokens condition the continuation.
  own = music_lm.continue_audio(clip, RATE, seconds=0.4, seed=2)
  np.testing.assert_array_equal(own.mulan[:, 0], music_lm.mulan.audio_to_tokens(clip))
  assert own.semantic.shape == (2, 35)


def test_a_clip_at_another_rate_is_tokenized_as_the_cached_training_tokens_are(music_lm):
  """Continuation resamples with the tokenizing tasks' resampler (audio.resample, soxr_hq), so
  a prompt clip gets the very codes music_tokenizers gave it for training."""
  rate = 24000
  t = np.arange(rate) / rate
  noise = np.random.default_rng(0).standard_normal((2, rate))
  clips = (0.3 * np.sin(2 * np.pi * np.array([[220.0], [660.0]]) * t)
           + 0.05 * noise).astype(np.float32)
  semantic, acoustic = music_lm.tokenize_clip(clips, rate)
  training = music_tokenizers.MusicTokenizers(music_lm.codec, music_lm.semantic_tokenizer,
                                              music_lm.mulan, LAYOUT)
  for clip, clip_semantic, clip_acoustic in zip(clips, semantic, acoustic):
    cached = training.tokenize(clip, rate)
    np.testing.assert_array_equal(clip_semantic, cached["semantic"])
    np.testing.assert_array_equal(clip_acoustic, cached["acoustic"])


def test_best_of_n_keeps_the_candidate_with_the_highest_mulan_score(music_lm):
  n = 3
  candidates = music_lm.generate([TEXTS[0]] * n, seconds=1.0, seed=5)
  scores = music_lm.mulan_scores(candidates.wav, [TEXTS[0]] * n)
  assert len(set(np.round(scores, 6))) == n  # distinct candidates, so the choice matters
  best = music_lm.generate([TEXTS[0]], seconds=1.0, seed=5, num_candidates=n)
  np.testing.assert_array_equal(best.wav[0], candidates.wav[scores.argmax()])
  np.testing.assert_allclose(best.scores, [scores.max()], rtol=1e-5)


def test_bad_requests_are_named(music_lm):
  with pytest.raises(ValueError, match="non-empty strings"):
    music_lm.generate(["ok", "  "], seconds=1.0)
  with pytest.raises(ValueError, match="num_candidates"):
    music_lm.generate(TEXTS, seconds=1.0, num_candidates=0)
  with pytest.raises(ValueError, match="shorter than one semantic frame"):
    music_lm.continue_audio(np.zeros((1, 100), np.float32), RATE, seconds=1.0)
  with pytest.raises(ValueError, match="unknown stage"):
    pipeline_helpers.tiny_music_lm(decoder_params={"semantics": {"temperature": 1.0}})


def test_per_stage_temperatures_default_to_the_paper_and_can_be_overridden():
  music_lm = pipeline_helpers.tiny_music_lm(decoder_params={"fine": {"temperature": 0.0}})
  assert music_lm.decoder_params["semantic"] == {"temperature": 1.0}
  assert music_lm.decoder_params["coarse"] == {"temperature": 0.95}
  assert music_lm.samplers["fine"].decoder_params == {"temperature": 0.0}
