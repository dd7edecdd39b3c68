"""Does a trained tiny SoundStream keep what the demo's prompt-following scorer reads?

Run:  .venv/bin/python bench/codec_attributes.py MODEL_DIR [MODEL_DIR ...] [--clips 64]

Renders the demo set's first `--clips` held-out clips (4 s, the clips after its training
clips), normalises them to the tokenizers' -20 dBFS, reconstructs each whole through every
codec checkpoint given (its newest step, `models/soundstream/tiny.gin` sizes), and prints per
codec the ranking AUC of register, instrument and drums on the reconstructions
(`prompt_following.rank_attribute`, control 0.5) and the mean mel distance to the input. It
compares codecs trained differently (crop length, steps) without training any stage.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import gin  # pylint: disable=g-import-not-at-top
import numpy as np

from bench.prompt_following_parts import RANKED, held_out_clips, rank_row
from musiclm_jax.codec.acoustic_tokenizer import Codec
from musiclm_jax.codec.soundstream import SoundStreamConfig
from musiclm_jax.core import audio
from musiclm_jax.evaluation import codec_metrics


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("model_dirs", nargs="+")
  parser.add_argument("--clips", type=int, default=64)
  args = parser.parse_args()
  gin.add_config_file_search_path(os.path.join(REPO, "musiclm_jax", "gin"))
  gin.parse_config_files_and_bindings(["models/soundstream/tiny.gin"], [])
  config = SoundStreamConfig()
  corpus, rendered = held_out_clips(args.clips)
  wavs = np.stack([audio.loudness_normalize(w) for w, _, _ in rendered])
  attributes = [a for _, _, a in rendered]
  print(f"{len(wavs)} held-out clips of synthetic_music/{corpus.name}, {corpus.seconds} s")
  print("| codec | register AUC | instrument AUC | drums AUC | mel distance |\n|---|---|---|---|---|")
  for model_dir in args.model_dirs:
    reconstructed = np.asarray(Codec.from_checkpoint(model_dir, config).reconstruct(wavs))
    row = rank_row(model_dir, list(reconstructed), attributes, config.sample_rate)
    aucs = [row[name]["auc"] for name in RANKED]
    mel = float(np.mean(codec_metrics.mel_distance(wavs, reconstructed, config.sample_rate)))
    print(f"| {model_dir} | " + " | ".join(f"{v:.3f}" for v in aucs) + f" | {mel:.3f} |")


if __name__ == "__main__":
  main()
