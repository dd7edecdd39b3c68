r"""Acoustic-stage predictions (of `infer` or t5x's `t5x.infer`) -> wavs.

  python -m musiclm_jax.codes_to_audio --gin_file=models/soundstream/tiny.gin \
    --gin_file=runs/codes_to_audio.gin --gin.STAGE="'fine'" \
    --gin.PREDICTIONS="'/tmp/fine/infer/*-predict.jsonl-*'" \
    --gin.SOUNDSTREAM_DIR="'/tmp/soundstream'" --gin.INFER_OUTPUT_DIR="'/tmp/fine/audio'"

writes `<id>.wav` per record and `decoded.jsonl` (musiclm_jax/inference/codes_to_audio.py)
and prints the latter's path.
"""
from musiclm_jax.core import gin_utils
from musiclm_jax.inference import codes_to_audio

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.codes_to_audio", codes_to_audio.decode_predictions)
