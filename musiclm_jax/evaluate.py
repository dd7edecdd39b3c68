r"""Evaluate a generation run folder against a captioned reference split.

  python -m musiclm_jax.evaluate --gin_file=runs/evaluate.gin \
    --gin.GENERATIONS_DIR="'output/generations'" \
    --gin.REFERENCE="'synthetic_music_pairs_tiny'" --gin.REFERENCE_SPLIT="'validation'"

Writes metrics.json and metrics.md into the generation folder and prints the json's path
(library: `evaluator.evaluate`). Bad input exits 2 with one line naming the culprit.
"""
from musiclm_jax.evaluation import evaluator
from musiclm_jax.core import gin_utils

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.evaluate", evaluator.evaluate, multi_process=False)
