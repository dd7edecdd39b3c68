"""The prompt-following measure: its shuffled-prompt control, and that it sees the prompt in
audio that does follow it (the synthesizer's own clips) and not in audio that does not."""
import numpy as np
import pytest

from musiclm_jax import prompt_following
from tasks import music_synth

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


def test_bad_clips_are_named():
  with pytest.raises(ValueError, match="finite mono clip"):
    prompt_following.log_mel_profile(np.full(4096, np.nan), RATE)
