"""Fréchet Audio Distance (Kilgour et al., 2019) and its unbiased extrapolation FAD∞.

Each set of clips is summarised by the mean and covariance of its embeddings (every window
of every clip, as the original FAD does with VGGish frames); the distance between the two
Gaussians is

  FAD = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r S_g)^(1/2)).

  ref = EmbeddingStats.from_embeddings(reference_embeddings)   # [n, dim]
  frechet_distance(ref, EmbeddingStats.from_embeddings(generated_embeddings))
  fad_infinity(reference_embeddings, generated_embeddings)     # {"fad_inf", "slope", ...}

FAD is biased upwards for finite sets, by roughly c / n (Chung et al.; Gui et al., 2024,
"Adapting Fréchet Audio Distance for Generative Music Evaluation"); FAD∞ fits FAD against
1 / n over subsets of the generated side and reports the intercept, the value at n = ∞.
"""
import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class EmbeddingStats:
  """Mean `[dim]`, covariance `[dim, dim]` and the number of embeddings behind them."""
  mean: np.ndarray
  cov: np.ndarray
  count: int

  @classmethod
  def from_embeddings(cls, embeddings, name: str = "embeddings") -> "EmbeddingStats":
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2:
      raise ValueError(f"{name}: FAD takes embeddings [n, dim], got shape {embeddings.shape}")
    if embeddings.shape[0] < 2:
      raise ValueError(f"{name}: a covariance needs at least 2 embeddings, got "
                       f"{embeddings.shape[0]}")
    if not np.all(np.isfinite(embeddings)):
      raise ValueError(f"{name}: embeddings hold NaN/Inf")
    return cls(embeddings.mean(axis=0), np.cov(embeddings, rowvar=False),
               embeddings.shape[0])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix; round-off negatives count as 0."""
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(cov_a: np.ndarray, cov_b: np.ndarray) -> float:
  """tr((A B)^(1/2)) for covariances A, B.

  A B is not symmetric, and a general `sqrtm` of it goes complex or loses accuracy when the
  covariances are singular (fewer embeddings than dimensions, the usual case for a small
  eval set). A B is similar to A^(1/2) B A^(1/2), which is symmetric PSD, so the trace is
  the sum of the square roots of that matrix's eigenvalues: two `eigh`, always real.
  """
  root_a = _psd_sqrt(cov_a)
  middle = root_a @ cov_b @ root_a
  values = np.linalg.eigvalsh((middle + middle.T) / 2)
  return float(np.sum(np.sqrt(np.clip(values, 0.0, None))))


def frechet_distance(a: EmbeddingStats, b: EmbeddingStats) -> float:
  """Fréchet distance between the Gaussians of two embedding sets (>= 0, 0 iff equal)."""
  if a.mean.shape != b.mean.shape:
    raise ValueError(f"FAD compares embeddings of one dimension, got {a.mean.shape[0]} and "
                     f"{b.mean.shape[0]} (different embedders?)")
  mean_term = float(np.sum(np.square(a.mean - b.mean)))
  cov_term = float(np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_sqrt_product(a.cov, b.cov))
  # Round-off can leave a tiny negative for identical sets.
  return max(mean_term + cov_term, 0.0)


def fad(reference_embeddings, generated_embeddings) -> float:
  """FAD between two embedding sets `[n, dim]` and `[m, dim]`."""
  return frechet_distance(EmbeddingStats.from_embeddings(reference_embeddings, "reference"),
                          EmbeddingStats.from_embeddings(generated_embeddings, "generated"))


def fad_infinity(reference_embeddings, generated_embeddings,
                 sizes: Optional[Sequence[int]] = None, num_points: int = 10,
                 min_size: Optional[int] = None, seed: int = 0) -> dict:
  """FAD∞: FAD of random subsets of the generated embeddings (sizes from `min_size`, default
  a quarter of the set, up to all of them), fitted by least squares as `fad = fad_inf +
  slope / n`. Returns {"fad_inf", "slope", "sizes", "fads"}; the reference side is whole.
  """
  reference = EmbeddingStats.from_embeddings(reference_embeddings, "reference")
  generated = np.asarray(generated_embeddings, np.float64)
  total = generated.shape[0] if generated.ndim == 2 else 0
  if sizes is None:
    low = min_size if min_size is not None else max(2, total // 4)
    sizes = sorted(set(np.linspace(low, total, num_points).astype(int).tolist()))
  sizes = [int(n) for n in sizes]
  if len(sizes) < 2 or min(sizes) < 2 or max(sizes) > total:
    raise ValueError(f"FAD∞ needs at least two subset sizes in [2, {total}] (the number of "
                     f"generated embeddings), got {sizes}")
  rng = np.random.default_rng(seed)
  fads = []
  for n in sizes:
    subset = generated[rng.choice(total, size=n, replace=False)]
    fads.append(frechet_distance(reference, EmbeddingStats.from_embeddings(subset)))
  design = np.stack([np.ones(len(sizes)), 1.0 / np.asarray(sizes, np.float64)], axis=1)
  (intercept, slope), *_ = np.linalg.lstsq(design, np.asarray(fads), rcond=None)
  return {"fad_inf": float(intercept), "slope": float(slope), "sizes": sizes,
          "fads": [float(f) for f in fads]}
