"""t5x drives the stages: `python -m t5x.train` / `python -m t5x.infer` with the gin files in
`musiclm_jax/gin/t5x/`, and checkpoints converted both ways (docs/t5x.md).

t5x is an optional extra (`pip install -e '.[t5x]'` plus t5x itself, which is published on
GitHub only); importing this package without it fails with one line that says how to get it.
"""
try:
  import t5x.models  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by a subprocess test
  raise ImportError(
      "musiclm_jax.t5x_bridge needs t5x: pip install -e '.[t5x]' && pip install --no-deps "
      "git+https://github.com/google-research/t5x git+https://github.com/google/airio "
      f"(or the wheels of an offline mirror; docs/t5x.md) [{e}]") from None
