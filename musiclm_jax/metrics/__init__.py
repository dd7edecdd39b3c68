"""Evaluation metrics, one family per file: `fad.py` (FAD, FAD∞), `kl.py` (classifier KL),
`mulan_cycle.py` (MCC), `codec.py` (SI-SNR, mel distance, bitrate); `embedders.py` is the
pluggable embedder / classifier interface and `embedding_cache.py` its per-clip disk cache."""
