"""audio_tasks.augment_captions: clauses of a caption dropped and reordered, never all of them,
reproducibly, and only when gin asks for it."""
import gin
import pytest
import tensorflow as tf

from musiclm_jax.data import audio_tasks

CAPTIONS = ["Loud, fast piece in C major, played on a high bell with drums.",
            "Quiet and slow: a deep organ plays a minor-key tune without drums.", "", "no commas"]


def _augmented(rate, repeats=8):
  with gin.unlock_config():
    gin.bind_parameter("tasks.caption_augmentation.rate", rate)
  try:
    ds = tf.data.Dataset.from_tensor_slices({"text": CAPTIONS}).repeat(repeats)
    return [ex["text"].decode() for ex in audio_tasks.augment_captions(ds).as_numpy_iterator()]
  finally:
    gin.clear_config()


def _clauses(text):
  return {c.strip().lower() for c in text.replace(";", ",").replace(":", ",").replace(".", ",")
          .split(",") if c.strip()}


def test_off_by_default_and_at_rate_zero():
  ds = tf.data.Dataset.from_tensor_slices({"text": CAPTIONS})
  assert audio_tasks.augment_captions(ds) is ds
  assert _augmented(0.0, repeats=1) == CAPTIONS


def test_rewritten_captions_keep_a_nonempty_reordered_subset_of_the_clauses():
  out = _augmented(1.0)
  originals = [CAPTIONS[i % len(CAPTIONS)] for i in range(len(out))]
  changed = 0
  for text, original in zip(out, originals):
    if not original:
      assert text == ""  # nothing to rewrite
      continue
    assert _clauses(text) and _clauses(text) <= _clauses(original), (text, original)
    changed += text != original
  assert changed >= len(out) // 3
  # Every clause is dropped sometimes, and order changes: not just a prefix each time.
  first = [t for t, o in zip(out, originals) if o == CAPTIONS[0]]
  assert len(set(first)) > 3
  assert any(not t.lower().startswith("loud") for t in first)


def test_half_the_captions_at_rate_one_half_and_bad_rates_refused():
  out = _augmented(0.5, repeats=40)
  originals = [CAPTIONS[i % len(CAPTIONS)] for i in range(len(out))]
  kept = sum(t == o for t, o in zip(out, originals) if o and o != "no commas")
  assert 0.3 < kept / 80 < 0.75
  with pytest.raises(ValueError, match="caption_augmentation"):
    audio_tasks.caption_augmentation(rate=2.0)
