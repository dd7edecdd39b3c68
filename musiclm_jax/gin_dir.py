"""Prints the directory of the package's gin files: t5x's `--gin_search_paths` for the files
in musiclm_jax/gin/t5x/ (`python -m t5x.train --gin_search_paths=$(python -m musiclm_jax.gin_dir)`)."""
from musiclm_jax.core.gin_utils import PACKAGE_GIN_DIR

if __name__ == "__main__":
  print(PACKAGE_GIN_DIR)
