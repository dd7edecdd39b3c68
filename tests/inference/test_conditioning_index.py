"""The conditioning index: a prompt's MuLan codes become the stages' nearest training tuple."""
import numpy as np
import pytest

from musiclm_jax.inference.conditioning_index import ConditioningIndex
from tests import pipeline_helpers
from tests.pipeline_helpers import LAYOUT

DIM = 16


@pytest.fixture(scope="module")
def quantizer():
  return pipeline_helpers.mulan_quantizer(DIM)


def _training_codes(quantizer, n=40, seed=3):
  return quantizer.tokens(pipeline_helpers.unit_vectors(n, DIM, seed))


def test_distinct_tuples_are_kept_with_how_many_examples_had_each():
  codes = np.array([[1, 2], [0, 5], [1, 2], [1, 2], [3, 3]])
  index = ConditioningIndex.from_codes(codes)
  assert index.codes.tolist() == [[0, 5], [1, 2], [3, 3]]
  assert index.counts.tolist() == [1, 3, 1]
  assert index.codes.dtype == np.int32


def test_an_embedding_becomes_the_indexed_tuple_of_highest_cosine(quantizer):
  index = ConditioningIndex.from_codes(_training_codes(quantizer))
  prompts = pipeline_helpers.unit_vectors(25, DIM, seed=9)
  snapped = index.nearest(quantizer, prompts)
  assert snapped.shape == (25, LAYOUT.mulan_levels)
  vectors = quantizer.vectors(index.codes)
  cosine = prompts @ (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).T
  np.testing.assert_array_equal(snapped, index.codes[cosine.argmax(axis=1)])
  # Unlike the RVQ's own codes of the prompts, which are mostly tuples no example had.
  seen = {tuple(c) for c in index.codes}
  assert all(tuple(c) in seen for c in snapped)
  assert not all(tuple(c) in seen for c in quantizer.tokens(prompts))


def test_a_training_embedding_keeps_its_own_tuple(quantizer):
  embeddings = pipeline_helpers.unit_vectors(40, DIM, seed=3)
  index = ConditioningIndex.from_codes(quantizer.tokens(embeddings))
  np.testing.assert_array_equal(index.nearest(quantizer, quantizer.vectors(index.codes)),
                                index.codes)


def test_the_index_survives_a_round_trip_and_bad_files_are_named(quantizer, tmp_path):
  index = ConditioningIndex.from_codes(_training_codes(quantizer))
  path = index.save(tmp_path / "sub" / "index.npz")
  loaded = ConditioningIndex.load(path)
  np.testing.assert_array_equal(loaded.codes, index.codes)
  np.testing.assert_array_equal(loaded.counts, index.counts)
  with pytest.raises(FileNotFoundError, match="missing.npz.*build_conditioning_index"):
    ConditioningIndex.load(tmp_path / "missing.npz")
  np.savez(tmp_path / "other.npz", centroids=np.zeros(3))
  with pytest.raises(ValueError, match="other.npz is not a conditioning index"):
    ConditioningIndex.load(tmp_path / "other.npz")


def test_an_index_over_another_mulan_is_refused(quantizer):
  wrong_levels = ConditioningIndex.from_codes(np.zeros((3, LAYOUT.mulan_levels + 1), int))
  with pytest.raises(ValueError, match="another MuLan"):
    wrong_levels.nearest(quantizer, pipeline_helpers.unit_vectors(2, DIM))
  too_big = ConditioningIndex.from_codes(
      np.full((1, LAYOUT.mulan_levels), LAYOUT.mulan_codebook_size))
  with pytest.raises(ValueError, match="another MuLan"):
    pipeline_helpers.tiny_music_lm(with_semantic_tokenizer=False, conditioning_index=too_big)
  with pytest.raises(ValueError, match="codes .examples >= 1, levels"):
    ConditioningIndex.from_codes(np.zeros((0, 4), int))


def test_generation_conditions_on_the_indexed_tuple_nearest_the_text():
  base = pipeline_helpers.shared_music_lm()
  index = ConditioningIndex.from_codes(_training_codes(base.mulan.quantizer))
  music_lm = pipeline_helpers.tiny_music_lm(with_semantic_tokenizer=False,
                                            conditioning_index=index)
  texts = ["a calm piano melody", "loud drums and bass"]
  expected = index.nearest(base.mulan.quantizer, base.mulan.embedder.embed_text(texts))
  np.testing.assert_array_equal(music_lm.text_tokens(texts), expected)
  out = music_lm.generate(texts, seconds=0.5, seed=0)
  np.testing.assert_array_equal(out.mulan[:, 0], expected)
