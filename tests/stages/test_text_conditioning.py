"""Captioned token tasks cache the caption's MuLan text codes beside the audio codes, and the
stage tasks condition that share of their training crops on them that
`tasks.mulan_text_conditioning.rate` names (evaluation crops always on the audio codes)."""
import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from musiclm_jax.stages import token_layout
from musiclm_jax.data import stage_tasks, token_tasks
from tests.data.test_music_tokenizers import music
from tests.data.test_music_tokenizers import tiny  # pylint: disable=unused-import  (fixture)

LAYOUT = token_layout.TINY
RATE = 16000


def _streams(n: int):
  """n clips of 4 s of token streams whose audio and text codes differ everywhere."""
  frames = {s: LAYOUT.frames(s, 4.0) for s in ("semantic", "acoustic")}
  return tf.data.Dataset.from_tensors({
      "mulan": np.arange(LAYOUT.mulan_levels, dtype=np.int32),
      "mulan_text": np.arange(LAYOUT.mulan_levels, dtype=np.int32) + 10,
      "semantic": np.zeros(frames["semantic"], np.int32),
      "acoustic": np.zeros((frames["acoustic"], LAYOUT.acoustic_levels), np.int32)}).repeat(n)


def _text_share(stage_name: str, rate: float, random_crop: bool = True, crop: float = 1.0):
  """The share of a stage's examples whose inputs start with the text codes' ids."""
  gin.bind_parameter("tasks.mulan_text_conditioning.rate", rate)
  try:
    preprocess = stage_tasks.stage_preprocessor(stage_name, LAYOUT, crop, random_crop)
    with seqio.utils.map_seed_manager(7):
      out = list(preprocess(_streams(400)).as_numpy_iterator())
  finally:
    gin.clear_config()
  stage = LAYOUT.stage(stage_name)
  text = stage.encode("mulan", np.arange(LAYOUT.mulan_levels) + 10)
  audio = stage.encode("mulan", np.arange(LAYOUT.mulan_levels))
  heads = [x["inputs"][:LAYOUT.mulan_levels] for x in out]
  assert all(np.array_equal(h, text) or np.array_equal(h, audio) for h in heads)
  return np.mean([np.array_equal(h, text) for h in heads])


@pytest.mark.parametrize("stage_name", ["semantic", "coarse"])
def test_training_crops_condition_on_text_codes_at_the_configured_rate(stage_name):
  assert _text_share(stage_name, 0.0) == 0.0   # the paper's: audio codes only
  assert _text_share(stage_name, 1.0) == 1.0
  assert 0.4 < _text_share(stage_name, 0.5) < 0.6
  assert _text_share(stage_name, 1.0, random_crop=False) == 0.0  # evaluation: audio codes


def test_a_stage_that_reads_no_mulan_codes_is_unchanged_and_a_bad_rate_is_refused():
  gin.bind_parameter("tasks.mulan_text_conditioning.rate", 1.0)
  try:
    out = next(stage_tasks.stage_preprocessor("fine", LAYOUT, 0.5, True)(
        _streams(1)).as_numpy_iterator())
  finally:
    gin.clear_config()
  assert out["inputs"].shape == (LAYOUT.frames("acoustic", 0.5) * LAYOUT.coarse_levels,)
  with pytest.raises(ValueError, match="rate must be in \\[0, 1\\], got 1.5"):
    stage_tasks.mulan_text_conditioning(1.5)


def test_captioned_clips_carry_their_captions_text_codes_and_an_uncaptioned_one_its_audio_codes(
    tiny):
  _, _, tokenizers = tiny
  clips = {"a": (music(4.0, seed=1), "a deep sine tone with drums"),
           "b": (music(4.0, seed=2), "a high square lead, no drums"),
           "c": (music(4.0, seed=3), "  ")}
  ids = list(clips)
  dataset = tf.data.Dataset.from_tensor_slices(ids).map(lambda i: {
      "id": i, "text": tf.numpy_function(lambda k: clips[k.decode()][1], [i], tf.string),
      "audio": tf.numpy_function(lambda k: clips[k.decode()][0], [i], tf.float32)})
  out = {ex["id"].decode(): ex for ex in token_tasks.tokenize_clips(
      dataset, task_name="t", layout=LAYOUT, sample_rate=RATE, min_seconds=4.0,
      load=lambda: tokenizers).as_numpy_iterator()}
  for clip_id in ("a", "b"):
    np.testing.assert_array_equal(out[clip_id]["mulan_text"],
                                  tokenizers.mulan.text_to_tokens([clips[clip_id][1]])[0])
  np.testing.assert_array_equal(out["c"]["mulan_text"], out["c"]["mulan"])


def test_captioned_sets_declare_the_text_codes_and_fma_does_not():
  for name, captioned in (("synthetic_music_tokens_demo", True),
                          ("musiccaps_tokens_16k", True), ("fma_tokens_small_24k", False)):
    features = seqio.get_mixture_or_task(name).output_features
    assert ("mulan_text" in features) == captioned, name
