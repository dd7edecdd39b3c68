"""KL divergence between a classifier's label distributions of generated and reference clips
(MusicLM Sec. 5.1 with a LEAF AudioSet classifier; AudioGen / audiocraft with PaSST).

A multi-label tagger (musicnn's 50 tags, AudioSet's 527 classes) gives one logit per label.
Two conventions turn those into distributions:

  "softmax"  audiocraft's: one categorical distribution over labels, p = softmax(logits);
             KL(p_ref || p_gen) = sum_k p_ref,k log(p_ref,k / p_gen,k).
  "sigmoid"  the multi-label reading: each label is its own Bernoulli(sigmoid(logit));
             KL = sum_k [p log(p / q) + (1 - p) log((1 - p) / (1 - q))], summed over labels.

A clip's distribution is the mean of its windows' distributions (`clip_distribution`, as
audiocraft averages PaSST's over segments), so long and short clips count once each.
`kl_metrics` follows audiocraft's report: "kld" = KL(ref || gen) per pair, averaged over
pairs, plus the reverse ("kld_qp") and their sum ("kld_both").
"""
import numpy as np

CONVENTIONS = ("softmax", "sigmoid")
EPS = 1e-6


def _check_convention(convention: str) -> None:
  if convention not in CONVENTIONS:
    raise ValueError(f"KL convention must be one of {CONVENTIONS}, got {convention!r}")


def label_distribution(logits, convention: str = "softmax") -> np.ndarray:
  """`[n, labels]` logits -> probabilities: rows summing to 1 (softmax) or per label (sigmoid)."""
  _check_convention(convention)
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or logits.shape[1] == 0:
    raise ValueError(f"KL takes classifier logits [n, labels], got shape {logits.shape}")
  if convention == "sigmoid":
    return 1.0 / (1.0 + np.exp(-logits))
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def clip_distribution(window_logits, convention: str = "softmax") -> np.ndarray:
  """`[windows, labels]` logits of one clip -> `[labels]`, the mean of the windows' distributions."""
  return label_distribution(window_logits, convention).mean(axis=0)


def kl_divergence(p, q, convention: str = "softmax", eps: float = EPS) -> np.ndarray:
  """KL(p || q) per row of `[n, labels]` probabilities in `convention` -> `[n]` (>= 0)."""
  _check_convention(convention)
  p = np.clip(np.asarray(p, np.float64), eps, 1.0)
  q = np.clip(np.asarray(q, np.float64), eps, 1.0)
  if p.shape != q.shape or p.ndim != 2:
    raise ValueError(f"KL compares probabilities [n, labels] of one shape, got {p.shape} "
                     f"and {q.shape}")
  kl = np.sum(p * np.log(p / q), axis=1)
  if convention == "sigmoid":
    p1 = np.clip(1.0 - p, eps, 1.0)
    q1 = np.clip(1.0 - q, eps, 1.0)
    kl = kl + np.sum(p1 * np.log(p1 / q1), axis=1)
  return np.maximum(kl, 0.0)


def kl_metrics(reference_probs, generated_probs, convention: str = "softmax") -> dict:
  """Paired `[n, labels]` clip distributions (row i of each is one reference / generation
  pair, from `clip_distribution`) -> {"kld", "kld_pq", "kld_qp", "kld_both", "per_example"};
  "kld" is KL(ref || gen)."""
  p = np.asarray(reference_probs, np.float64)
  q = np.asarray(generated_probs, np.float64)
  if p.shape[:1] == (0,) or q.shape[:1] == (0,):
    raise ValueError("KL over an empty set of clips is undefined")
  if p.shape != q.shape:
    raise ValueError(f"KL pairs clips one to one: reference distributions {p.shape} vs "
                     f"generated {q.shape}")
  pq = kl_divergence(p, q, convention)
  qp = kl_divergence(q, p, convention)
  return {"kld": float(pq.mean()), "kld_pq": float(pq.mean()), "kld_qp": float(qp.mean()),
          "kld_both": float(pq.mean() + qp.mean()), "per_example": pq}
