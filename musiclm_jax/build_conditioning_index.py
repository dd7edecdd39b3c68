r"""Indexes the MuLan code tuples the stages trained on (gin entry point).

  MUSICLM_SEQIO_CACHE_DIR=out/token_cache python -m musiclm_jax.build_conditioning_index \
    --gin_file=runs/build_conditioning_index.gin \
    --gin.TOKEN_TASK="'synthetic_music_tokens_demo'" \
    --gin.OUTPUT="'out/conditioning_index.npz'" --gin.tasks.mulan_text_conditioning.rate=1.0

Reads the cached token task's train split and writes the index (`inference/
conditioning_index.py`); bind `tasks.mulan_text_conditioning.rate` as the stages were trained
with. Generation uses it through `--gin.pipeline.Parts.conditioning_index_file`. A bad
binding, a missing cache or feature exits with status 2 and one line naming the cause.
"""
from musiclm_jax.core import gin_utils
from musiclm_jax.inference import conditioning_index

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.build_conditioning_index", conditioning_index.build,
                     multi_process=False)
