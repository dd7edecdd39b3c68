"""Text -> audio runs: prompts, the output folder (wavs, generations.jsonl, index.html), safe
ids, resuming partial output, and `python -m musiclm_jax.generate` with runs/generate.gin."""
import json
import os
import subprocess
import sys

import gin
import pytest
import soundfile as sf

from musiclm_jax.core import gin_utils
from musiclm_jax.inference import listening_page, pipeline, text_to_audio
from tests import pipeline_helpers
from tests.train_runner import REPO, env

PROMPTS = [
    {"id": "../evil", "text": "<script>window.pwned = 1</script> calm piano", "seconds": 0.6},
    {"id": "a/b", "text": "loud drums", "seconds": 0.6, "reference_id": "clip-9"},
    {"id": "a_b", "text": "soft strings", "seconds": 0.6},
    {"id": "café ☕", "text": "jazz trio", "seconds": 0.4},
]


class CountingLoader:
  """The shared tiny MusicLM; counts calls."""

  def __init__(self):
    self.calls = 0

  def __call__(self):
    self.calls += 1
    return pipeline_helpers.shared_music_lm()


def _prompts_file(tmp_path, prompts=PROMPTS):
  path = tmp_path / "prompts.jsonl"
  path.write_text("".join(json.dumps(p) + "\n" for p in prompts), encoding="utf-8")
  return str(path)


def _records(output_dir):
  with open(os.path.join(output_dir, text_to_audio.RECORDS), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _run(tmp_path, output_dir, loader=None, **kwargs):
  return text_to_audio.generate(load_music_lm=loader or CountingLoader(), output_dir=str(output_dir),
                                prompts_file=_prompts_file(tmp_path), batch_size=2, **kwargs)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("t2a")
  output_dir = tmp_path / "out"
  page = _run(tmp_path, output_dir, seed=7)
  return tmp_path, output_dir, page


def test_every_prompt_gets_a_wav_a_record_and_a_row(generated):
  _, output_dir, page = generated
  assert page == str(output_dir / "index.html")
  records = _records(output_dir)
  assert [r["id"] for r in records] == [p["id"] for p in PROMPTS]
  for record, prompt in zip(records, PROMPTS):
    assert record["text"] == prompt["text"]
    assert record.get("reference_id") == prompt.get("reference_id")
    assert record["file"] == listening_page.safe_stem(prompt["id"]) + ".wav"
    assert record["sample_rate"] == 16000 and record["seconds"] == prompt["seconds"]
    wav, rate = sf.read(output_dir / record["file"])
    assert rate == 16000 and len(wav) == round(prompt["seconds"] * 16000)
    assert (output_dir / record["spectrogram"]).is_file()
    assert record["tokens"]["semantic"] == round(prompt["seconds"] * 25)
    assert record["tokens"]["acoustic"] == round(prompt["seconds"] * 50) * 4
    assert record["tokens"]["mulan"] == 4
    assert set(record["timings"]) >= {"semantic", "coarse", "fine", "decode"}
  # Batches of equal length, at most 2: the seed is 7 + the index of the batch's first prompt.
  assert [r["seed"] for r in records] == [7, 7, 9, 10]
  assert [r["batch_size"] for r in records] == [2, 2, 1, 1]


def test_no_id_escapes_the_output_folder(generated):
  tmp_path, output_dir, _ = generated
  assert sorted(os.listdir(tmp_path)) == ["out", "prompts.jsonl"]
  names = os.listdir(output_dir)
  assert len([n for n in names if n.endswith(".wav")]) == len(PROMPTS)
  assert not [n for n in names if n.startswith(".") or ".tmp" in n]


def test_the_page_shows_captions_as_text(generated):
  _, output_dir, _ = generated
  page = (output_dir / "index.html").read_text(encoding="utf-8")
  assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page and "<script>" not in page
  assert page.count("<audio") == len(PROMPTS)


def test_a_rerun_of_a_finished_folder_loads_nothing(generated, tmp_path):
  _, output_dir, _ = generated
  loader = CountingLoader()
  text_to_audio.generate(load_music_lm=loader, output_dir=str(output_dir),
                         prompts_file=_prompts_file(tmp_path), batch_size=2, seed=7)
  assert loader.calls == 0
  assert len(_records(output_dir)) == len(PROMPTS)


def test_resume_after_partial_output_makes_only_the_missing_clips(generated, tmp_path):
  _, finished, _ = generated
  output_dir = tmp_path / "partial"
  output_dir.mkdir()
  records = _records(finished)
  # As a kill leaves it: two clips done, the third's wav written but its record torn.
  for record in records[:3]:
    for name in (record["file"], record["spectrogram"]):
      (output_dir / name).write_bytes((finished / name).read_bytes())
  lines = [json.dumps(r) + "\n" for r in records[:2]] + [json.dumps(records[2])[:40]]
  (output_dir / text_to_audio.RECORDS).write_text("".join(lines), encoding="utf-8")
  before = {n: os.stat(output_dir / n).st_mtime_ns for n in os.listdir(output_dir)}
  loader = CountingLoader()
  text_to_audio.generate(load_music_lm=loader, output_dir=str(output_dir),
                         prompts_file=_prompts_file(tmp_path), batch_size=2, seed=7)
  assert loader.calls == 1
  resumed = _records(output_dir)
  assert sorted(r["id"] for r in resumed) == sorted(p["id"] for p in PROMPTS)
  assert resumed[:2] == records[:2]
  for record in records[:2]:
    assert os.stat(output_dir / record["file"]).st_mtime_ns == before[record["file"]]
  # The remaining clips are generated with the seeds of the batches they now form.
  assert {r["id"]: r["seed"] for r in resumed[2:]} == {"a_b": 9, "café ☕": 10}
  page = (output_dir / "index.html").read_text(encoding="utf-8")
  assert page.count("<audio") == len(PROMPTS)


def test_prompt_files_plain_and_jsonl_and_their_errors(tmp_path):
  plain = tmp_path / "plain.txt"
  plain.write_text("calm piano\n\n  loud drums  \n", encoding="utf-8")
  prompts = text_to_audio.read_prompts(str(plain), seconds=3.0)
  assert prompts == [text_to_audio.Prompt("1", "calm piano", 3.0),
                     text_to_audio.Prompt("3", "loud drums", 3.0)]
  cases = {'{"id": "a", "text": "x"}\n{"id": "b"}\n': "bad.jsonl:2: needs a non-empty",
           '{"id": "a", "text": "x", "seconds": -1}\n': "bad.jsonl:1: seconds",
           '{"id": "a", "text": "x"\n': "bad.jsonl:1: not valid JSON",
           '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n': "id 'a' repeats",
           '{"id": "a/b", "text": "x"}\n{"id": "a/b", "text": "y"}\n': "repeats",
           "\n\n": "holds no prompts"}
  for content, message in cases.items():
    (tmp_path / "bad.jsonl").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
      text_to_audio.read_prompts(str(tmp_path / "bad.jsonl"), seconds=1.0)
  with pytest.raises(FileNotFoundError, match="missing.txt"):
    text_to_audio.read_prompts(str(tmp_path / "missing.txt"), seconds=1.0)
  referenced = tmp_path / "referenced.jsonl"
  referenced.write_text('{"id": "g1", "text": "x", "reference_id": 17}\n', encoding="utf-8")
  assert text_to_audio.read_prompts(str(referenced), seconds=1.0) == [
      text_to_audio.Prompt("g1", "x", 1.0, "17")]
  with pytest.raises(ValueError, match="exactly one of"):
    text_to_audio.generate(load_music_lm=CountingLoader(), output_dir=str(tmp_path / "o"))


def test_best_of_n_records_the_mulan_score(tmp_path):
  prompts = [{"id": "p", "text": "calm piano", "seconds": 0.6}]
  text_to_audio.generate(load_music_lm=CountingLoader(), output_dir=str(tmp_path / "out"),
                         prompts_file=_prompts_file(tmp_path, prompts), num_candidates=2)
  (record,) = _records(tmp_path / "out")
  assert record["num_candidates"] == 2 and -1.0 <= record["mulan_score"] <= 1.0
  # The reranker is named: here a MuLan built in memory, from no model directory.
  assert record["reranker"] == {"model": "mulan", "dir": None}
  assert "rerank" in record["timings"]


# --- the command line, with checkpoints of the parts musiclm_jax/gin/pipeline/tiny.gin configures ---------

def _dir_bindings(root):
  names = ("SOUNDSTREAM", "MULAN", "SEMANTIC", "COARSE", "FINE")
  return [f"{name}_DIR = '{root / name.lower()}'" for name in names]


@pytest.mark.slow
def test_generate_command_generates_from_the_gin_configured_parts(tmp_path):
  gin.clear_config()
  try:
    gin_utils.parse_gin(["pipeline/tiny.gin"], _dir_bindings(tmp_path / "parts"))
    pipeline_helpers.write_parts(pipeline.Parts())
  finally:
    gin.clear_config()
  output_dir = tmp_path / "generations"
  command = [sys.executable, "-m", "musiclm_jax.generate", "--gin_file=pipeline/tiny.gin",
             "--gin_file=runs/generate.gin",
             *[f"--gin.{b.replace(' = ', '=')}" for b in _dir_bindings(tmp_path / "parts")],
             f"--gin.PROMPTS_FILE='{_prompts_file(tmp_path, PROMPTS[:2])}'",
             f"--gin.INFER_OUTPUT_DIR='{output_dir}'",
             "--gin.pipeline.load.crop_seconds={'semantic': 1.0, 'coarse': 0.6, 'fine': 0.4}"]
  result = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == str(output_dir / "index.html")
  assert [r["id"] for r in _records(output_dir)] == ["../evil", "a/b"]
  bad = subprocess.run(command[:-3] + [f"--gin.PROMPTS_FILE='{tmp_path / 'nope.txt'}'",
                                       f"--gin.INFER_OUTPUT_DIR='{output_dir}'"],
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith(
      f"musiclm_jax.generate: error: prompts file not found: {tmp_path / 'nope.txt'}")


CAPTIONS_TASK = "text_to_audio_test_captions"


def _register_captions_task():
  import seqio  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if CAPTIONS_TASK in seqio.TaskRegistry.names():
    return
  captions = {"text": ["calm piano", "<b>bold</b> drums", "strings"], "ytid": ["x1", "x/2", "x3"]}
  seqio.TaskRegistry.add(
      CAPTIONS_TASK,
      source=seqio.FunctionDataSource(
          lambda split, shuffle_files, seed=None: tf.data.Dataset.from_tensor_slices(captions),
          splits=("validation",)),
      preprocessors=[],
      output_features={k: seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False,
                                        dtype=tf.string, rank=0) for k in captions})


def test_prompts_from_a_seqio_task_use_its_text_and_id_features():
  _register_captions_task()
  prompts = text_to_audio.task_prompts(CAPTIONS_TASK, "validation", 2.0, id_feature="ytid",
                                       max_prompts=2)
  # A task's clip is the reference its generation is evaluated against (per-clip KL).
  assert prompts == [text_to_audio.Prompt("x1", "calm piano", 2.0, "x1"),
                     text_to_audio.Prompt("x/2", "<b>bold</b> drums", 2.0, "x/2")]
  # Unnamed, the features are found as evaluate finds them: ytid is an id, text a caption.
  found = text_to_audio.task_prompts(CAPTIONS_TASK, "validation", 2.0)
  assert [(p.id, p.text) for p in found] == [("x1", "calm piano"), ("x/2", "<b>bold</b> drums"),
                                             ("x3", "strings")]
  with pytest.raises(ValueError, match="no caption feature 'caption'"):
    text_to_audio.task_prompts(CAPTIONS_TASK, "validation", 2.0, text_feature="caption")


def test_prompts_from_an_audio_task_read_its_uncropped_source(tmp_path, monkeypatch):
  # A raw-audio pairs task crops its audio (it needs a sequence length); its captions and clip
  # ids come from its TFDS source instead, the ids becoming the generations' reference ids.
  from musiclm_jax.data import audio_tasks  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv("MUSICLM_TFDS_DIR", str(tmp_path / "tfds"))
  prompts = text_to_audio.task_prompts("synthetic_music_pairs_tiny", "validation", 1.0,
                                       max_prompts=3)
  assert len(prompts) == 3 and all(p.reference_id == p.id for p in prompts)
  assert len({p.id for p in prompts}) == 3 and all(len(p.text) > 20 for p in prompts)
  assert audio_tasks.tfds_data_dir() == str(tmp_path / "tfds")
