"""`python -m musiclm_jax.train` trains the tiny SoundStream on the synthetic tone task: GAN
steps, codec metrics at eval, codebooks in the checkpoint, and a Codec loaded from it."""
import json
import subprocess
import sys

import numpy as np

from musiclm_jax.codec.acoustic_tokenizer import Codec
from tests.soundstream_helpers import tiny_config, tones
from tests.train_runner import REPO, env

FLAGS = ["--gin_file=models/soundstream/tiny.gin", "--gin_file=runs/train.gin",
         "--gin_file=tasks/synthetic_tones.gin", "--gin.TRAIN_STEPS=4", "--gin.BATCH_SIZE=4",
         "--gin.WARMUP_STEPS=1", "--gin.tasks.audio_feature_lengths.crop_seconds=0.2",
         "--gin.soundstream.SoundStream.discriminator_start_step=2",
         "--gin.trainer.train.log_every=2", "--gin.trainer.train.eval_every=4",
         "--gin.trainer.train.eval_steps=1", "--gin.trainer.train.checkpoint_every=4"]


def test_train_command_runs_the_gan_logs_codec_metrics_and_checkpoints_codebooks(
    tmp_path, monkeypatch):
  result = subprocess.run(
      [sys.executable, "-m", "musiclm_jax.train", *FLAGS, f"--gin.MODEL_DIR='{tmp_path}'"],
      cwd=REPO, env=env(), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (tmp_path / "metrics.txt").read_text().splitlines()]
  train = [r for r in records if "train/loss" in r]
  assert [r["train/discriminator_active"] for r in train] == [0.0, 1.0]
  assert train[-1]["train/discriminator_grad_norm"] > 0
  evals = [r for r in records if "eval/si_snr_db" in r]
  assert len(evals) == 1 and evals[0]["eval/bitrate_bps"] == 1200.0
  assert np.isfinite(evals[0]["eval/mel_distance"]) and evals[0]["eval/mel_distance"] > 0

  codec = Codec.from_checkpoint(tmp_path, tiny_config())
  assert int(codec.variables["codebooks"]["quantizer"]["initialized"]) == 1
  assert codec.encode(tones(2, 3200)).shape == (2, 10, 4)
  # A model folder relative to the working folder loads too (orbax itself wants absolute).
  monkeypatch.chdir(tmp_path.parent)
  relative = Codec.from_checkpoint(tmp_path.name, tiny_config())
  np.testing.assert_array_equal(relative.encode(tones(2, 3200)), codec.encode(tones(2, 3200)))
