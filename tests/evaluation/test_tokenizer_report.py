"""The tokenizer report's own arithmetic (the trained-tokenizer path runs in
python -m musiclm_jax.demo.tokenizers, whose numbers the README quotes)."""
import numpy as np
import pytest

from musiclm_jax.data import audio_tasks  # pylint: disable=unused-import  (registers the tasks)
from musiclm_jax.evaluation import tokenizer_report


def test_code_usage_perplexity_is_the_number_of_equally_used_codes():
  usage = tokenizer_report.code_usage(np.array([0, 1, 2, 3] * 5), codebook_size=8)
  assert usage["perplexity"] == pytest.approx(4.0) and usage["used"] == 0.5
  assert usage["frames"] == 20 and usage["codebook_size"] == 8
  assert tokenizer_report.code_usage(np.zeros(7, int), 8)["perplexity"] == pytest.approx(1.0)
  skewed = tokenizer_report.code_usage(np.array([0] * 9 + [1]), 8)["perplexity"]
  assert 1.0 < skewed < 2.0
  with pytest.raises(ValueError, match="no codes"):
    tokenizer_report.code_usage(np.array([], int), 8)


def test_mulan_hears_each_corpus_at_its_pairs_task_level():
  assert tokenizer_report.pairs_normalised("rendered_scores_pairs_demo")
  assert not tokenizer_report.pairs_normalised("synthetic_music_pairs_demo")
