"""`python -m musiclm_jax.infer`: t5x's files and records, score mode, prompts, kill + resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from musiclm_jax.inference import inference_inputs
from tests.train_runner import BASE_FLAGS, REPO, env, run_train

NUM_EXAMPLES = 64  # the synthetic validation split
OUTPUT = "synthetic_token_streams_semantic_eval-{mode}.jsonl-00000-of-00001"
MODEL_FLAGS = [f for f in BASE_FLAGS if f.startswith(("--gin_file=models", "--gin.Transformer"))]


def infer_command(model_dir, output_dir, *flags):
  return [sys.executable, "-m", "musiclm_jax.infer", *MODEL_FLAGS, "--gin_file=runs/infer.gin",
          "--gin_file=tasks/synthetic_stage.gin", f"--gin.CHECKPOINT_DIR='{model_dir}'",
          f"--gin.INFER_OUTPUT_DIR='{output_dir}'", "--gin.BATCH_SIZE=4", *flags]


def run_infer(*args, **kwargs):
  return subprocess.run(infer_command(*args, **kwargs), cwd=REPO, env=env(), capture_output=True,
                        text=True, timeout=300)


def read_records(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("stage")
  result = run_train(directory, "--gin.TRAIN_STEPS=20")
  assert result.returncode == 0, result.stderr[-2000:]
  return directory


def test_predict_writes_t5x_records_for_every_example(model_dir, tmp_path):
  result = run_infer(model_dir, tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  path = tmp_path / OUTPUT.format(mode="predict")
  assert os.path.exists(str(path) + ".COMPLETED")
  records = read_records(path)
  assert len(records) == NUM_EXAMPLES
  assert len({r["inputs"]["id"] for r in records}) == NUM_EXAMPLES
  first = records[0]
  assert set(first) == {"inputs", "prediction", "prediction_tokens", "score"}
  assert len(first["inputs"]["inputs"]) == 4  # the TINY layout's MuLan tokens
  codes = np.asarray(first["prediction"]["semantic"])
  assert codes.shape[1] == 1 and codes.min() >= 0 and codes.max() < 64
  assert len(first["prediction_tokens"]) == codes.shape[0]


def test_score_mode_scores_the_reference_targets(model_dir, tmp_path):
  result = run_infer(model_dir, tmp_path, "--gin.stage_inference.infer.mode='score'")
  assert result.returncode == 0, result.stderr[-2000:]
  records = read_records(tmp_path / OUTPUT.format(mode="score"))
  assert len(records) == NUM_EXAMPLES
  scores = np.array([r["score"] for r in records])
  assert np.all(scores < 0) and np.all(np.isfinite(scores))


def test_infer_resumes_after_sigkill_without_losing_or_repeating_records(model_dir, tmp_path):
  flags = ("--gin.stage_inference.infer.chunk_batches=1", "--gin.BATCH_SIZE=2")
  reference = run_infer(model_dir, tmp_path / "reference", *flags)
  assert reference.returncode == 0, reference.stderr[-2000:]
  killed = tmp_path / "killed"
  proc = subprocess.Popen(infer_command(model_dir, killed, *flags), cwd=REPO, env=env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  markers = lambda: [n for n in os.listdir(killed / "tmp")
                     if n.endswith(".COMPLETED")] if (killed / "tmp").is_dir() else []
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None and len(markers()) < 3:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, "inference finished before it could be killed"
  assert not os.path.exists(killed / OUTPUT.format(mode="predict"))
  resumed = run_infer(model_dir, killed, *flags)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "Resuming after" in resumed.stderr
  expected = read_records(tmp_path / "reference" / OUTPUT.format(mode="predict"))
  actual = read_records(killed / OUTPUT.format(mode="predict"))
  assert actual == expected


def test_prompts_file_generates_one_record_per_prompt(model_dir, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text('{"id": "a", "inputs": [15, 100, 154, 230]}\n\n'
                     '{"id": "b", "inputs": [20, 90, 160, 240]}\n')
  result = run_infer(model_dir, tmp_path / "out", "--gin.stage_inference.infer.dataset_cfg=None",
                     f"--gin.stage_inference.infer.prompts_file='{prompts}'",
                     "--gin.stage_inference.infer.targets_length=101")
  assert result.returncode == 0, result.stderr[-2000:]
  records = read_records(tmp_path / "out" / "prompts-predict.jsonl-00000-of-00001")
  assert [r["inputs"]["id"] for r in records] == ["a", "b"]
  assert all(len(r["prediction"]["semantic"]) > 0 for r in records)


def test_bad_prompts_name_the_file_and_line(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "a", "inputs": [15, 100]}\n{"id": "b", "inputs": "x y"}\n')
  with pytest.raises(ValueError, match="bad.jsonl:2"):
    inference_inputs.read_prompts(str(bad))
  specials = tmp_path / "specials.txt"
  specials.write_text("15 1 20\n")
  with pytest.raises(ValueError, match="specials.txt:1"):
    inference_inputs.read_prompts(str(specials))
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    inference_inputs.read_prompts(str(tmp_path / "missing.jsonl"))
