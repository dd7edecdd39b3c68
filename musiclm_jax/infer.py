r"""Batch inference (t5x's `infer` entry point): token-level stage inference, or text -> audio.

Token level, one trained stage (runs/infer.gin):

  python -m musiclm_jax.infer \
    --gin_file=models/semantic/tiny.gin --gin_file=runs/infer.gin \
    --gin_file=tasks/synthetic_stage.gin \
    --gin.CHECKPOINT_DIR="'output/semantic_tiny'" --gin.INFER_OUTPUT_DIR="'output/infer'"

writes `{task}-{mode}.jsonl-NNNNN-of-NNNNN` (+ `.COMPLETED`) in INFER_OUTPUT_DIR and prints
its path. Text -> audio with all six parts (runs/generate.gin, musiclm_jax/text_to_audio.py):

  python -m musiclm_jax.infer --gin_file=pipeline/tiny.gin --gin_file=runs/generate.gin \
    --gin.SOUNDSTREAM_DIR="'out/soundstream'" --gin.MULAN_DIR="'out/mulan'" \
    --gin.SEMANTIC_DIR="'out/semantic'" --gin.COARSE_DIR="'out/coarse'" \
    --gin.FINE_DIR="'out/fine'" --gin.PROMPTS_FILE="'prompts.txt'" \
    --gin.INFER_OUTPUT_DIR="'out/generations'"

writes wavs, generations.jsonl and index.html and prints the page's path. Rerun after a kill,
either resumes. Errors in the configuration exit 2 with one line.
"""
from musiclm_jax import gin_utils, text_to_audio

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.infer", text_to_audio.entry_point)
