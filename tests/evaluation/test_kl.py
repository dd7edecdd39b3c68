"""KL divergence of label distributions, in both conventions."""
import numpy as np
import pytest

from musiclm_jax.evaluation import kl


def test_identical_outputs_give_zero_in_both_conventions():
  logits = np.random.default_rng(0).normal(size=(6, 50)) * 3
  for convention in kl.CONVENTIONS:
    probs = kl.label_distribution(logits, convention)
    result = kl.kl_metrics(probs, probs, convention)
    assert result["kld"] == pytest.approx(0.0, abs=1e-12)
    assert result["kld_both"] == pytest.approx(0.0, abs=1e-12)


def test_softmax_matches_the_categorical_formula():
  p = np.array([[0.5, 0.25, 0.25]])
  q = np.array([[0.25, 0.25, 0.5]])
  expected = 0.5 * np.log(2) + 0.25 * np.log(0.5)
  assert kl.kl_divergence(p, q, "softmax")[0] == pytest.approx(expected, rel=1e-9)
  assert kl.label_distribution(np.log(p), "softmax") == pytest.approx(p)


def test_sigmoid_sums_bernoulli_divergences():
  p, q = np.array([[0.9, 0.2]]), np.array([[0.6, 0.2]])
  expected = 0.9 * np.log(0.9 / 0.6) + 0.1 * np.log(0.1 / 0.4)
  assert kl.kl_divergence(p, q, "sigmoid")[0] == pytest.approx(expected, rel=1e-9)
  np.testing.assert_allclose(kl.label_distribution(np.array([[0.0, np.log(3)]]), "sigmoid"),
                             [[0.5, 0.75]])


def test_kl_grows_as_generated_logits_drift_and_is_asymmetric():
  rng = np.random.default_rng(1)
  reference = rng.normal(size=(8, 20))
  drift = rng.normal(size=(8, 20))
  values = [kl.kl_metrics(kl.label_distribution(reference),
                          kl.label_distribution(reference + scale * drift))["kld"]
            for scale in (0.1, 0.5, 1.0, 2.0)]
  assert values == sorted(values) and values[0] > 0
  result = kl.kl_metrics(kl.label_distribution(reference), kl.label_distribution(drift))
  assert result["kld_pq"] != pytest.approx(result["kld_qp"])
  assert result["kld_both"] == pytest.approx(result["kld_pq"] + result["kld_qp"])


def test_clip_distribution_averages_window_probabilities():
  windows = np.array([[0.0, 10.0], [10.0, 0.0]])
  np.testing.assert_allclose(kl.clip_distribution(windows, "softmax"), [0.5, 0.5])


def test_bad_inputs_are_errors():
  with pytest.raises(ValueError, match="empty set"):
    kl.kl_metrics(np.zeros((0, 3)), np.zeros((0, 3)))
  with pytest.raises(ValueError, match="one to one"):
    kl.kl_metrics(np.full((2, 3), 1 / 3), np.full((3, 3), 1 / 3))
  with pytest.raises(ValueError, match="convention"):
    kl.label_distribution(np.zeros((1, 3)), "relu")
