r"""Token-level batch inference with one trained stage (t5x's `infer` entry point).

  python -m musiclm_jax.infer \
    --gin_file=models/semantic/tiny.gin --gin_file=runs/infer.gin \
    --gin_file=tasks/synthetic_stage.gin \
    --gin.CHECKPOINT_DIR="'output/semantic_tiny'" --gin.INFER_OUTPUT_DIR="'output/infer'"

writes `{task}-{mode}.jsonl-NNNNN-of-NNNNN` (+ `.COMPLETED`) in INFER_OUTPUT_DIR and prints
its path; `--gin.stage_inference.infer.mode='score'` scores instead of sampling. A rerun after
a kill resumes. Text -> audio is `python -m musiclm_jax.generate`. Errors in the
configuration exit 2 with one line.
"""
from musiclm_jax.core import gin_utils
from musiclm_jax.inference import stage_inference

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.infer", stage_inference.infer)
