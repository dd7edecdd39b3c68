"""Acoustic-stage prediction records (ours and t5x.infer's) -> codes -> wavs."""
import json
import subprocess
import sys

import numpy as np
import optax
import pytest
import soundfile as sf

from musiclm_jax.core import checkpoints
from musiclm_jax.core.train_state import TrainState
from musiclm_jax.inference.codes_to_audio import acoustic_codes
from musiclm_jax.layers import rvq
from musiclm_jax.stages import token_layout
from tests import pipeline_helpers, soundstream_helpers
from tests.train_runner import REPO, env

LAYOUT = token_layout.TINY
FRAMES = 5


def _codes(levels, seed):
  return np.random.default_rng(seed).integers(0, 64, (FRAMES, len(levels)))


def _record(stage_name, clip_id, t5x_style, seed=0):
  """A record as `infer` (no EOS in prediction_tokens) or t5x.infer (EOS kept) writes it."""
  stage = LAYOUT.stage(stage_name)
  ((stream, written),) = stage.writes
  rng = np.random.default_rng(seed + 1)
  inputs = []
  for read_stream, levels in stage.reads:
    shape = (len(levels),) if read_stream == "mulan" else (FRAMES, len(levels))
    codes = rng.integers(0, LAYOUT.codebook_size(read_stream), shape)
    inputs += stage.encode(read_stream, codes, levels).tolist()
  predicted = stage.encode(stream, _codes(written, seed), written).tolist()
  if t5x_style:
    predicted.append(token_layout.EOS_ID)
  return {"inputs": {"inputs": inputs, "id": clip_id}, "prediction_tokens": predicted}


def test_a_fine_record_holds_every_level_and_both_formats_agree():
  stage = LAYOUT.stage("fine")
  ours, theirs = _record("fine", "a", False), _record("fine", "a", True)
  codes = acoustic_codes(stage, ours)
  np.testing.assert_array_equal(codes, acoustic_codes(stage, theirs))
  coarse = LAYOUT.levels("acoustic", "coarse")
  assert codes.shape == (FRAMES, LAYOUT.acoustic_levels)
  np.testing.assert_array_equal(codes[:, len(coarse):], _codes(LAYOUT.levels("acoustic", "fine"), 0))
  np.testing.assert_array_equal(
      codes[:, :len(coarse)], stage.decode("acoustic", np.asarray(ours["inputs"]["inputs"]), coarse))


def test_a_coarse_record_decodes_at_the_coarse_levels_and_semantic_has_no_decoder():
  codes = acoustic_codes(LAYOUT.stage("coarse"), _record("coarse", "b", True))
  assert codes.shape == (FRAMES, len(LAYOUT.levels("acoustic", "coarse")))
  with pytest.raises(ValueError, match="no audio decoder"):
    acoustic_codes(LAYOUT.stage("semantic"), _record("semantic", "c", True))


def _codec_checkpoint(model_dir):
  config = soundstream_helpers.tiny_config()
  variables = pipeline_helpers.codec_variables(config)
  manager = checkpoints.create_manager(f"{model_dir}/checkpoints")
  checkpoints.save(manager, 1, TrainState.create(
      {"generator": variables["params"]}, optax.sgd(0.1).init(variables["params"]),
      {rvq.COLLECTION: variables[rvq.COLLECTION]}))
  manager.wait_until_finished()
  manager.close()
  return config


def test_codes_to_audio_command_writes_a_wav_per_record(tmp_path):
  config = _codec_checkpoint(tmp_path / "soundstream")
  predictions = tmp_path / "fine-predict.jsonl-00000-of-00001"
  records = [_record("fine", "x/1", True, seed=1), _record("fine", "../y", False, seed=2)]
  predictions.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  command = [sys.executable, "-m", "musiclm_jax.codes_to_audio",
             "--gin_file=models/soundstream/tiny.gin", "--gin_file=runs/codes_to_audio.gin",
             "--gin.STAGE='fine'", f"--gin.SOUNDSTREAM_DIR='{tmp_path / 'soundstream'}'",
             f"--gin.INFER_OUTPUT_DIR='{tmp_path / 'audio'}'"]
  result = subprocess.run(command + [f"--gin.PREDICTIONS='{tmp_path}/fine-predict.jsonl-*'"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  decoded_path = result.stdout.strip().splitlines()[-1]
  with open(decoded_path, encoding="utf-8") as f:
    decoded = [json.loads(line) for line in f]
  assert [d["id"] for d in decoded] == ["x/1", "../y"]
  for d in decoded:
    wav, rate = sf.read(tmp_path / "audio" / d["file"])
    assert rate == config.sample_rate and len(wav) == FRAMES * config.hop
    assert d["levels"] == LAYOUT.acoustic_levels and "/" not in d["file"]
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"inputs": {"id": "z"}}) + "\n", encoding="utf-8")
  result = subprocess.run(command + [f"--gin.PREDICTIONS='{bad}'"], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 2
  assert f"{bad}:1 is not a prediction record" in result.stderr.strip().splitlines()[-1]
