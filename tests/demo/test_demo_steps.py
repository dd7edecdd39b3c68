"""The demo's step runner: runs each step once, skips finished ones, redoes changed or broken
ones, and stops at a failing step without losing the finished steps' markers."""
import json
import os
import subprocess
import sys

import pytest

from musiclm_jax.demo import prompts as demo_prompts, recipe, step_runner
from musiclm_jax.data import music_synth, synthetic_music

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python_step(name, code, outputs):
  return step_runner.Step(name, name, "tests.exec_code", (code,), tuple(outputs))


def test_steps_run_once_then_skip(tmp_path):
  out = tmp_path / "a.txt"
  step = _python_step("a", f"open({str(out)!r}, 'a').write('ran ')", [str(out)])
  logs = []
  first = step_runner.run_steps([step], str(tmp_path / "state"), REPO, log=logs.append)
  assert set(first) == {"a"} and out.read_text() == "ran "
  second = step_runner.run_steps([step], str(tmp_path / "state"), REPO, log=logs.append)
  assert second == {} and out.read_text() == "ran "
  assert any("done already, skipped" in line for line in logs)


def test_a_changed_command_or_a_lost_output_reruns_the_step(tmp_path):
  out = tmp_path / "a.txt"
  state = str(tmp_path / "state")
  step = _python_step("a", f"open({str(out)!r}, 'a').write('1')", [str(out)])
  step_runner.run_steps([step], state, REPO, log=lambda _: None)
  changed = _python_step("a", f"open({str(out)!r}, 'a').write('2')", [str(out)])
  assert set(step_runner.run_steps([changed], state, REPO, log=lambda _: None)) == {"a"}
  assert out.read_text() == "12"
  out.unlink()
  assert set(step_runner.run_steps([changed], state, REPO, log=lambda _: None)) == {"a"}
  assert out.read_text() == "2"


def test_a_failing_step_names_itself_and_keeps_the_steps_before_it(tmp_path):
  done, never = tmp_path / "done.txt", tmp_path / "never.txt"
  state = str(tmp_path / "state")
  steps = [_python_step("first", f"open({str(done)!r}, 'w').write('ok')", [str(done)]),
           _python_step("broken", "raise SystemExit(3)", []),
           _python_step("last", f"open({str(never)!r}, 'w').write('no')", [str(never)])]
  with pytest.raises(step_runner.StepFailed, match="step 'broken' failed with exit code 3"):
    step_runner.run_steps(steps, state, REPO, log=lambda _: None)
  assert not never.exists()
  assert step_runner.is_done(state, steps[0]) and not step_runner.is_done(state, steps[1])
  # The time of the step that finished stays on record for the timings summary.
  recorded = step_runner.recorded_seconds(steps, state)
  assert set(recorded) == {"first"} and recorded["first"] > 0


def test_a_step_that_exits_0_without_its_outputs_is_not_done(tmp_path):
  step = _python_step("quiet", "pass", [str(tmp_path / "missing.txt")])
  with pytest.raises(step_runner.StepFailed, match="did not write"):
    step_runner.run_steps([step], str(tmp_path / "state"), REPO, log=lambda _: None)


def test_dry_run_prints_every_step_as_a_shell_line(tmp_path):
  result = subprocess.run([sys.executable, "-m", "musiclm_jax.demo", "--dry_run",
                           f"--output_dir={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  names = [s.name for s in recipe.steps(str(tmp_path))]
  assert names == ["data", "soundstream", "w2v_bert", "kmeans", "mulan", "mulan_rvq",
                   "cache_tokens", "semantic", "coarse", "fine", "conditioning_index", "prompts",
                   "generate", "evaluate", "prompt_following", "heldout_prompts",
                   "generate_heldout", "prompt_following_heldout", "mulan_following"]
  for name in names:
    assert f"# {name}: " in result.stdout
  assert "python -m seqio.scripts.cache_tasks_main --module_import=musiclm_jax.data.token_tasks" in (
      result.stdout)
  assert f"\"--gin.MODEL_DIR='{tmp_path}/soundstream'\"" in result.stdout
  assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_unknown_only_step_is_refused(tmp_path):
  result = subprocess.run([sys.executable, "-m", "musiclm_jax.demo", "--only=nope",
                           f"--output_dir={tmp_path}"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode != 0 and "unknown steps ['nope']" in result.stderr


def test_prompts_differ_in_measurable_attributes(tmp_path):
  records = demo_prompts.write_prompts(str(tmp_path / "p.jsonl"), 4.0)
  lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
  assert lines == records and len({r["id"] for r in records}) == len(records) == 144
  assert {r["attributes"]["register"] for r in records} == {"low", "high"}
  assert len({r["text"] for r in records}) >= 60  # a few short templates may coincide
  # Every prompt lies in the world the demo trains on: its corpus draws from the same space.
  space = synthetic_music.config_by_name(recipe.DATASET_CONFIG).space
  assert space == demo_prompts.SPACE
  combinations = {(a["register"], a["instrument"], a["drums"]) for a in
                  (music_synth.draw_attributes(i, 0, space) for i in range(256))}
  assert combinations == {(r["attributes"]["register"], r["attributes"]["instrument"],
                           r["attributes"]["drums"]) for r in records}
  for record in records:
    a = record["attributes"]
    assert (a["mode"], a["tempo_bpm"], a["loudness"]) == (
        space.modes[0], space.tempo_bpm[0], space.loudness[0])


def test_the_tiny_pipeline_generates_in_windows_of_the_crops_its_stages_trained_on(tmp_path):
  # pylint: disable=import-outside-toplevel  (TF, gin: only this test needs them)
  import gin
  from musiclm_jax.core import gin_utils
  from musiclm_jax.data import token_tasks
  generate = next(s for s in recipe.steps(str(tmp_path)) if s.name == "generate")
  assert "--gin_file=pipeline/tiny.gin" in generate.args
  gin.clear_config()
  try:
    gin_utils.parse_gin(["pipeline/tiny.gin"], [f"{d}_DIR='{tmp_path}'" for d in (
        "SOUNDSTREAM", "MULAN", "SEMANTIC", "COARSE", "FINE")])
    windows = gin.query_parameter("pipeline.load.crop_seconds")
  finally:
    gin.clear_config()
  for config in token_tasks.TINY_SYNTHETIC_CONFIGS:
    assert windows == dict(token_tasks.synthetic_music_spec(config).crop_seconds), config
  for stage in ("semantic", "coarse"):
    train = next(s for s in recipe.steps(str(tmp_path)) if s.name == stage)
    assert (f"--gin.tasks.mulan_text_conditioning.rate={recipe.MULAN_TEXT_RATE}"
            in train.args)
