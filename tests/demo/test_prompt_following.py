"""The prompt-following measure: its shuffled-prompt control, and that it sees the prompt in
audio that does follow it (the synthesizer's own clips) and not in audio that does not."""
import numpy as np
import pytest

from musiclm_jax.demo import prompt_following
from musiclm_jax.data import music_synth

RATE, SECONDS = 16000, 2.0


def test_shuffled_control_is_the_expected_match_under_permutation():
  predicted, prompted = ["a", "a", "a", "b"], ["a", "b", "a", "b"]
  result = prompt_following.score(predicted, prompted)
  rng = np.random.default_rng(0)
  permuted = [np.mean([p == q for p, q in zip(predicted, rng.permutation(prompted))])
              for _ in range(4000)]
  assert result["matched"] == 0.75
  assert result["shuffled"] == pytest.approx(np.mean(permuted), abs=0.01)
  with pytest.raises(ValueError, match="equally many"):
    prompt_following.score(["a"], [])


def test_rendered_clips_follow_their_attributes_and_noise_does_not():
  clips, attributes = [], []
  for index in range(1000, 1036):  # clips the centroids were not fitted on
    wav, _, attrs = music_synth.render_clip(index, 0, RATE, SECONDS)
    clips.append(wav)
    attributes.append(attrs)
  wanted = {"register": ("low", "mid", "high")}
  following = prompt_following.prompt_following(clips, RATE, attributes, wanted, SECONDS)
  noise = [np.random.default_rng(i).normal(0, 0.1, len(c)).astype(np.float32)
           for i, c in enumerate(clips)]
  ignoring = prompt_following.prompt_following(noise, RATE, attributes, wanted, SECONDS)
  print(following, ignoring)
  assert following["register"]["matched"] > following["register"]["shuffled"] + 0.25
  assert ignoring["register"]["matched"] == pytest.approx(ignoring["register"]["shuffled"],
                                                          abs=0.2)


def test_ranking_auc_its_control_and_p_value():
  prompted = ["low"] * 10 + ["high"] * 10
  ordered = prompt_following.rank_score(list(range(20)), prompted, ("low", "high"))
  assert ordered["auc"] == 1.0 and ordered["shuffled"] == 0.5 and ordered["p_value"] < 0.001
  reversed_ = prompt_following.rank_score(list(range(20))[::-1], prompted, ("low", "high"))
  assert reversed_["auc"] == 0.0 and reversed_["p_value"] > 0.99
  ties = prompt_following.rank_score([1.0] * 20, prompted, ("low", "high"))
  assert ties["auc"] == 0.5
  # A feature unrelated to the prompts scores 0.5 on average over many draws.
  rng = np.random.default_rng(0)
  aucs = [prompt_following.rank_score(rng.normal(size=20), prompted, ("low", "high"),
                                      permutations=10)["auc"] for _ in range(300)]
  assert np.mean(aucs) == pytest.approx(0.5, abs=0.02)
  with pytest.raises(ValueError, match=r"\['mid'\] are not in the order"):
    prompt_following.rank_score([0.0, 1.0], ["low", "mid"], ("low", "high"))
  with pytest.raises(ValueError, match="two values"):
    prompt_following.rank_score([0.0, 1.0], ["low", "low"], ("low", "high"))


def test_rendered_demo_clips_rank_by_register_drums_and_brightness():
  clips, attributes = [], []
  for index in range(1000, 1024):
    wav, _, attrs = music_synth.render_clip(index, 0, RATE, SECONDS, music_synth.DEMO)
    clips.append(wav)
    attributes.append(attrs)
  wanted = {"register": ("low", "high"), "drums": (False, True),
            "instrument": music_synth.DEMO.instruments}
  following = prompt_following.prompt_following(clips, RATE, attributes, wanted, SECONDS,
                                                music_synth.DEMO)
  print(following)
  for attribute in ("register", "drums"):
    assert following[attribute]["ranking"]["auc"] > 0.95
    assert following[attribute]["ranking"]["p_value"] < 0.01
    assert following[attribute]["matched"] > following[attribute]["shuffled"] + 0.3
  # Brightness orders the timbres less cleanly (register moves the centroid too), but well.
  assert following["instrument"]["ranking"]["auc"] > 0.7
  assert following["instrument"]["ranking"]["p_value"] < 0.05


def test_timbres_without_a_brightness_order_are_not_ranked():
  clips = [music_synth.render_clip(i, 0, RATE, SECONDS)[0] for i in range(4)]
  attributes = [{"instrument": v} for v in ("saw", "organ", "saw", "organ")]
  following = prompt_following.prompt_following(
      clips, RATE, attributes, {"instrument": ("saw", "organ")}, SECONDS)
  assert "ranking" not in following["instrument"]


def test_bad_clips_are_named():
  with pytest.raises(ValueError, match="finite mono clip"):
    prompt_following.log_mel_profile(np.full(4096, np.nan), RATE)
