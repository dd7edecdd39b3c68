"""`python -m t5x.train` / `python -m t5x.infer` drive a tiny stage with our gin files; the
checkpoint t5x writes converts to ours (and back), and our `infer` and pipeline read it."""
import glob
import json
import os
import subprocess
import sys

import flax
import gin
import numpy as np
import pytest

pytest.importorskip("t5x.train")

from musiclm_jax.core import gin_utils  # noqa: E402
from musiclm_jax.inference import pipeline  # noqa: E402
from musiclm_jax.inference.stage_inference import prediction_codes  # noqa: E402
from musiclm_jax.stages import token_layout  # noqa: E402
from musiclm_jax.t5x_bridge import checkpoint_conversion  # noqa: E402
from tests import pipeline_helpers  # noqa: E402
from tests.train_runner import REPO, env  # noqa: E402

STEPS = 4
TASK = ["--gin_file=tasks/synthetic_stage.gin"]
T5X_GIN = [f"--gin_search_paths={gin_utils.PACKAGE_GIN_DIR}",
           "--gin_file=t5x/models/semantic/tiny.gin"]


def _run(args, timeout=600, devices=1):
  run_env = env()
  if devices > 1:
    run_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=run_env,
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


def _t5x_train(model_dir, *flags, devices=1):
  return _run(["t5x.train", *T5X_GIN, "--gin_file=t5x/runs/train.gin", *TASK,
               f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={STEPS}", *flags],
              devices=devices)


def _convert(to_format, source, destination):
  out = _run(["musiclm_jax.t5x_bridge.convert", "--gin_file=t5x/models/semantic/tiny.gin",
              *TASK, "--gin_file=t5x/runs/convert.gin", f"--gin.convert.to_format='{to_format}'",
              f"--gin.convert.source='{source}'", f"--gin.convert.destination='{destination}'"])
  return out.stdout.strip().splitlines()[-1]


def _records(output_dir, mode):
  (path,) = glob.glob(os.path.join(output_dir, f"*-{mode}.jsonl-00000-of-00001"))
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _t5x_infer(checkpoint, output_dir, mode, *flags):
  _run(["t5x.infer", *T5X_GIN, "--gin_file=t5x/runs/infer.gin", *TASK,
        f"--gin.CHECKPOINT_PATH='{checkpoint}'", f"--gin.INFER_OUTPUT_DIR='{output_dir}'",
        f"--gin.infer.mode='{mode}'", *flags])
  return _records(output_dir, mode)


def _our_infer(model_dir, output_dir, mode, *flags):
  _run(["musiclm_jax.infer", "--gin_file=models/semantic/tiny.gin", "--gin_file=runs/infer.gin",
        *TASK, f"--gin.CHECKPOINT_DIR='{model_dir}'", f"--gin.INFER_OUTPUT_DIR='{output_dir}'",
        f"--gin.stage_inference.infer.mode='{mode}'", *flags])
  return _records(output_dir, mode)


@pytest.fixture(scope="module")
def t5x_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("t5x")
  _t5x_train(root / "t5x", "--gin.utils.SaveCheckpointConfig.period=2")
  ours = _convert("ours", root / "t5x", root / "ours")
  return root, ours


def test_t5x_train_writes_checkpoints_that_convert_to_ours_exactly(t5x_run):
  root, ours = t5x_run
  assert ours == str(root / "ours" / "checkpoints" / str(STEPS))
  t5x_params, step = checkpoint_conversion.read_t5x_params(str(root / "t5x"))
  assert step == STEPS
  back = _convert("t5x", root / "ours", root / "t5x_again")
  assert back == str(root / "t5x_again" / f"checkpoint_{STEPS}")
  again, again_step = checkpoint_conversion.read_t5x_params(back)
  assert again_step == STEPS
  a, b = (flax.traverse_util.flatten_dict(dict(tree), sep="/") for tree in (t5x_params, again))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  # Converting onto an existing step refuses instead of overwriting it.
  bad = subprocess.run([sys.executable, "-m", "musiclm_jax.t5x_bridge.convert",
                        "--gin_file=t5x/models/semantic/tiny.gin", *TASK,
                        "--gin_file=t5x/runs/convert.gin", "--gin.convert.to_format='ours'",
                        f"--gin.convert.source='{root / 't5x'}'",
                        f"--gin.convert.destination='{root / 'ours'}'"],
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and "already has a checkpoint of step" in bad.stderr


def test_t5x_infer_scores_and_greedy_decodes_equal_our_infer_on_the_same_checkpoint(t5x_run):
  root, _ = t5x_run
  checkpoint = root / "t5x" / f"checkpoint_{STEPS}"
  theirs = _t5x_infer(checkpoint, root / "t5x_score", "score")
  mine = _our_infer(root / "ours", root / "our_score", "score")
  assert [r["inputs"]["id"] for r in theirs] == [r["inputs"]["id"] for r in mine]
  np.testing.assert_allclose([r["score"] for r in theirs], [r["score"] for r in mine],
                             rtol=1e-5)
  greedy = "{'temperature': 0.0}"
  theirs = _t5x_infer(checkpoint, root / "t5x_predict", "predict",
                      f"--gin.stage_model.DecoderOnlyModel.default_decoder_params={greedy}")
  mine = _our_infer(root / "ours", root / "our_predict", "predict",
                    f"--gin.stage_inference.infer.decoder_params={greedy}")
  stage = token_layout.TINY.stage("semantic")
  assert len(theirs) == len(mine) > 0
  for t, m in zip(theirs, mine):
    assert t["inputs"]["inputs"] == m["inputs"]["inputs"]
    codes, ids = prediction_codes(stage, np.asarray(t["prediction_tokens"]))
    assert ids == m["prediction_tokens"]
    assert codes == m["prediction"]


def test_our_pipeline_generates_from_the_stage_t5x_trained(t5x_run, tmp_path):
  root, _ = t5x_run
  names = ("SOUNDSTREAM", "MULAN", "SEMANTIC", "COARSE", "FINE")
  bindings = [f"{name}_DIR = '{tmp_path / name.lower()}'" for name in names]
  gin.clear_config()
  try:
    gin_utils.parse_gin(["pipeline/tiny.gin"], bindings)
    pipeline_helpers.write_parts(pipeline.Parts())
  finally:
    gin.clear_config()
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a calm piano melody\n", encoding="utf-8")
  out = tmp_path / "generations"
  _run(["musiclm_jax.generate", "--gin_file=pipeline/tiny.gin", "--gin_file=runs/generate.gin",
        *[f"--gin.{b.replace(' = ', '=')}" for b in bindings if not b.startswith("SEMANTIC")],
        f"--gin.SEMANTIC_DIR='{root / 'ours'}'", f"--gin.PROMPTS_FILE='{prompts}'",
        f"--gin.INFER_OUTPUT_DIR='{out}'",
        "--gin.pipeline.load.crop_seconds={'semantic': 1.0, 'coarse': 0.6, 'fine': 0.4}"])
  with open(out / "generations.jsonl", encoding="utf-8") as f:
    (record,) = [json.loads(line) for line in f]
  assert os.path.getsize(os.path.join(out, record["file"])) > 1000


def test_t5x_train_on_8_devices_shards_the_stage_over_a_model_axis_of_2(tmp_path):
  _t5x_train(tmp_path / "t5x8", '--gin.t5x_bridge.Partitioner.mesh_shape=(4, 2)', devices=8)
  assert os.path.isdir(tmp_path / "t5x8" / f"checkpoint_{STEPS}" / "state")
  info = (tmp_path / "t5x8" / "model-info.txt").read_text(encoding="utf-8")
  logits = [line for line in info.splitlines() if "logits_dense/kernel" in line]
  assert logits and "partition spec (None, 'model')" in logits[0], info[:2000]
  _, step = checkpoint_conversion.read_t5x_params(str(tmp_path / "t5x8"))
  assert step == STEPS
