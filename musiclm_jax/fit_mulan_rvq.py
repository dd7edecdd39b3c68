r"""Fits the MuLan RVQ on audio embeddings (gin entry point, t5x-style flags).

  python -m musiclm_jax.fit_mulan_rvq \
    --gin_file=models/mulan/tiny.gin --gin_file=runs/fit_mulan_rvq.gin \
    --gin_file=tasks/synthetic_music_pairs.gin --gin.MODEL_DIR="'/tmp/mulan_tiny'"

Reads the newest MuLan checkpoint in MODEL_DIR and writes `{MODEL_DIR}/mulan_rvq.npz` (the
RVQ codebooks: levels x codebook_size x 128); the steps are in `mulan_tokenizer.fit_rvq`, and its
path is printed. Re-running overwrites the file atomically. A bad binding, missing checkpoint
or data problem exits with status 2 and one line naming the cause.
"""
from musiclm_jax.core import gin_utils
from musiclm_jax.mulan import mulan_tokenizer

if __name__ == "__main__":
  gin_utils.run_main("musiclm_jax.fit_mulan_rvq", mulan_tokenizer.fit_rvq)
