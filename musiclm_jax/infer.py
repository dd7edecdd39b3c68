r"""Batch inference with a trained stage (t5x's `infer` entry point and output files).

  python -m musiclm_jax.infer \
    --gin_file=models/semantic/tiny.gin --gin_file=runs/infer.gin \
    --gin_file=tasks/synthetic_stage.gin \
    --gin.CHECKPOINT_DIR="'output/semantic_tiny'" --gin.INFER_OUTPUT_DIR="'output/infer'"

Writes `{task}-{mode}.jsonl-NNNNN-of-NNNNN` (+ `.COMPLETED`) in INFER_OUTPUT_DIR and prints
its path; rerun after a kill, it resumes. Errors in the configuration exit 2 with one line.
"""
from musiclm_jax import gin_utils, inference

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.infer", inference.infer)
