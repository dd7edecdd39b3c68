r"""Converts a stage checkpoint between t5x's layout and ours (checkpoint_conversion.py).

  python -m musiclm_jax.t5x_bridge.convert --gin_file=t5x/models/semantic/tiny.gin \
    --gin_file=tasks/synthetic_stage.gin --gin_file=t5x/runs/convert.gin \
    --gin.convert.to_format="'ours'" --gin.convert.source="'/tmp/t5x_semantic'" \
    --gin.convert.destination="'/tmp/semantic'"

`to_format='ours'` reads a t5x model directory (newest checkpoint_<step>, or that directory
itself) and writes our `{destination}/checkpoints/<step>`, which `infer`, `generate` and the
pipeline read; `to_format='t5x'` goes the other way, for `t5x.infer` or t5x fine-tuning.
Prints the directory it wrote.
"""
from musiclm_jax.core import gin_utils
from musiclm_jax.t5x_bridge import checkpoint_conversion

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.t5x_bridge.convert", checkpoint_conversion.convert,
                     user_errors=(ValueError, FileNotFoundError, FileExistsError))
