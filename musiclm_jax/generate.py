r"""Text -> audio with all six trained parts: prompts in, wavs and a listening page out.

  python -m musiclm_jax.generate --gin_file=pipeline/tiny.gin --gin_file=runs/generate.gin \
    --gin.SOUNDSTREAM_DIR="'out/soundstream'" --gin.MULAN_DIR="'out/mulan'" \
    --gin.SEMANTIC_DIR="'out/semantic'" --gin.COARSE_DIR="'out/coarse'" \
    --gin.FINE_DIR="'out/fine'" --gin.PROMPTS_FILE="'prompts.txt'" \
    --gin.INFER_OUTPUT_DIR="'out/generations'"

writes wavs, spectrograms, generations.jsonl and index.html (musiclm_jax/inference/
text_to_audio.py) and prints the page's path. A rerun after a kill skips the finished clips.
Errors in the configuration exit 2 with one line.
"""
from musiclm_jax.core import gin_utils
from musiclm_jax.inference import text_to_audio

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.generate", text_to_audio.generate)
