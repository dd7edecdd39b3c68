"""Evaluation on synthetic music: metrics track known perturbations; the command end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from musiclm_jax.evaluation import evaluator, musicnn
from musiclm_jax.evaluation import embedders, fad, kl
from musiclm_jax.data import musiccaps, tfds_audio
from tests import evaluate_helpers as eh

SNRS_DB = (30, 20, 10, 0)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  eh.reference_clips(path)  # builds once
  return path


@pytest.fixture(autouse=True)
def _tfds_dir(data_dir, monkeypatch):
  monkeypatch.setenv("MUSICLM_TFDS_DIR", data_dir)


@pytest.fixture(scope="module")
def tagger():
  return musicnn.MusicnnTagger.load("MTT_musicnn")


@pytest.fixture(scope="module")
def references(data_dir):
  return eh.reference_clips(data_dir)


def test_musicnn_fad_is_zero_for_identical_sets_and_rises_as_noise_grows(tagger, references):
  embedder = embedders.musicnn_embedder(tagger, "penultimate")
  wavs = references[0]
  clean = np.concatenate(embedders.embed_clips(embedder, wavs))
  assert clean.shape == (2 * len(wavs), 200)
  assert fad.fad(clean, clean) < 1e-9
  values = []
  for snr in SNRS_DB:
    noisy = [eh.add_noise(w, snr, seed=i) for i, w in enumerate(wavs)]
    values.append(fad.fad(clean, np.concatenate(embedders.embed_clips(embedder, noisy))))
  print("musicnn FAD at SNR", dict(zip(SNRS_DB, np.round(values, 3))))
  assert values == sorted(values) and values[0] > 0


def test_musicnn_kl_is_zero_for_identical_clips_and_grows_with_noise(tagger, references):
  classifier = embedders.musicnn_embedder(tagger, "logits")
  wavs = references[0][:6]

  def distributions(clips, convention):
    return np.stack([kl.clip_distribution(x, convention)
                     for x in embedders.embed_clips(classifier, clips)])

  for convention in kl.CONVENTIONS:
    clean = distributions(wavs, convention)
    assert kl.kl_metrics(clean, clean, convention)["kld"] == pytest.approx(0.0, abs=1e-12)
    values = [kl.kl_metrics(clean, distributions([eh.add_noise(w, snr) for w in wavs],
                                                 convention), convention)["kld"]
              for snr in (20, 0)]
    print(f"musicnn KL ({convention}) at SNR 20, 0 dB:", np.round(values, 4))
    assert 0 < values[0] < values[1]


def test_evaluate_writes_metrics_beside_the_listening_page(tmp_path, references):
  wavs, captions, ids = references
  folder = eh.write_generation_folder(
      str(tmp_path / "gen"), [eh.add_noise(w, 10) for w in wavs[:8]], captions[:8],
      reference_ids=ids[:8], subtype="PCM_16")
  cache = str(tmp_path / "cache")
  path = evaluator.evaluate(generations_dir=folder, reference=eh.PAIRS_TASK,
                             reference_split="validation", cache_dir=cache,
                             fad_infinity=True)
  assert path == os.path.join(folder, "metrics.json")
  report = json.load(open(path, encoding="utf-8"))
  assert report["reference"]["ids_present"] == ids
  assert report["reference"]["referenced_ids_missing"] == []
  assert report["kl"]["pairing"] == "reference_id"
  (fad_values,) = report["fad"].values()
  assert fad_values["fad"] > 0 and fad_values["generated_windows"] == 16
  assert report["kl"]["softmax"]["kld"] > 0 and report["kl"]["sigmoid"]["kld"] > 0
  assert report["cache"]["misses"] == 2 * len(ids)   # FAD embeddings and tag logits
  table = open(os.path.join(folder, "metrics.md"), encoding="utf-8").read()
  assert "| FAD (musicnn_MTT_musicnn) |" in table and "FAD∞" in table and ids[0] in table
  print(table)
  # The listening page written before the metrics now links them and lists every clip.
  page = open(os.path.join(folder, "index.html"), encoding="utf-8").read()
  assert 'href="metrics.md"' in page and page.count("<audio") == 8

  # A second run embeds no reference clip again; clean generations score lower.
  clean = eh.write_generation_folder(str(tmp_path / "clean"), wavs[:8], captions[:8])
  report2 = json.load(open(evaluator.evaluate(
      generations_dir=clean, reference=eh.PAIRS_TASK, reference_split="validation",
      cache_dir=cache), encoding="utf-8"))
  assert report2["cache"]["hits"] == 2 * len(ids) and report2["cache"]["misses"] == 0
  # No reference ids: paired with the set mean, and the report says how many lacked one.
  assert report2["kl"]["pairing"] == "set_mean" and report2["kl"]["unpaired"] == 8
  assert "(8 generations without their reference)" in open(
      os.path.join(clean, "metrics.md"), encoding="utf-8").read()
  (fad2,) = report2["fad"].values()
  assert fad2["fad"] < fad_values["fad"]
  # 16 windows of a 200-d embedding: FAD∞ is reported beside FAD without being asked for.
  assert fad2["generated_windows"] < fad2["dim"] and "fad_inf" in fad2
  assert report2["selection"] is None


def _selection(directory):
  return {"num_candidates": 4, "reranker": {"model": "mulan", "dir": directory}}


def test_mcc_of_clips_the_same_mulan_picked_is_flagged_as_selection_biased(tmp_path):
  ours, other = str(tmp_path / "mulan"), str(tmp_path / "other_mulan")
  picked = [_selection(ours), _selection(ours)]
  assert evaluator.selection_biased(picked, ours)
  assert evaluator.selection_biased(picked, ours + "/")
  assert not evaluator.selection_biased(picked, other)
  assert evaluator.selection_biased([_selection(None)], other)  # unrecorded: cannot rule out
  assert not evaluator.selection_biased([None, None], ours)     # no best-of-N at all
  summary = evaluator.selection_summary([None, *picked])
  assert summary == {"reranked_clips": 2, "num_candidates": [4], "scorer": ["mulan"],
                     "scorer_dirs": [ours]}
  report = {"num_generations": 3, "selection": summary,
            "reference": {"name": "r", "split": "s", "num_clips": 1, "ids_present": ["a"]},
            "fad": {}, "kl": {"pairing": "reference_id", "unpaired": 0,
                              **{c: {"kld": 0.1, "kld_both": 0.2} for c in kl.CONVENTIONS}},
            "mcc": {"mcc": 0.4, "mcc_reference": 0.5, "selection_biased": True}}
  from musiclm_jax.evaluation import metrics_report  # pylint: disable=import-outside-toplevel
  table = metrics_report.markdown(report)
  assert "selection-biased" in table and "best of [4] candidates by mulan" in table
  report["mcc"]["selection_biased"] = False
  assert "selection-biased" not in metrics_report.markdown(report)


def test_bad_generation_folders_name_the_culprit(tmp_path, references):
  wavs, captions, _ = references
  kwargs = dict(reference=eh.PAIRS_TASK, reference_split="validation")
  with pytest.raises(FileNotFoundError, match="no generations.jsonl"):
    evaluator.evaluate(generations_dir=str(tmp_path / "nothing"), **kwargs)
  folder = eh.write_generation_folder(str(tmp_path / "gen"), wavs[:2], captions[:2])
  sf.write(os.path.join(folder, "gen_001.wav"), wavs[1], 24000)
  with pytest.raises(ValueError, match="gen_001.wav: the file is at 24000 Hz"):
    evaluator.evaluate(generations_dir=folder, **kwargs)
  with open(os.path.join(folder, "gen_001.wav"), "wb") as f:
    f.write(b"RIFF not really a wav")
  with pytest.raises(ValueError, match="gen_001.wav"):
    evaluator.evaluate(generations_dir=folder, **kwargs)
  os.remove(os.path.join(folder, "gen_001.wav"))
  with pytest.raises(ValueError, match="audio file not found: .*gen_001.wav"):
    evaluator.evaluate(generations_dir=folder, **kwargs)
  good = eh.write_generation_folder(str(tmp_path / "good"), wavs[:2], captions[:2])
  with pytest.raises(ValueError, match="has no split 'nope'"):
    evaluator.evaluate(generations_dir=good, reference="synthetic_music/eval_test:1.0.0",
                        reference_split="nope")


def test_command_on_a_musiccaps_shaped_download(tmp_path):
  manual = eh.make_musiccaps_download(str(tmp_path / "manual"))
  data_dir = str(tmp_path / "tfds")
  config = musiccaps.MusicCapsConfig(name="evaltest", sample_rate=eh.RATE, min_seconds=2.0)
  tfds_audio.prepare(musiccaps.Musiccaps(config=config, data_dir=data_dir), manual)
  wavs, captions = eh.held_out_clips(4, seconds=eh.MUSICCAPS_SECONDS)
  folder = eh.write_generation_folder(
      str(tmp_path / "gen"), wavs, captions,
      reference_ids=["yt-a", "yt_b", "ytc", eh.MUSICCAPS_GONE])
  command = [sys.executable, "-m", "musiclm_jax.evaluate", "--gin_file=runs/evaluate.gin",
             f"--gin.GENERATIONS_DIR='{folder}'", "--gin.REFERENCE='musiccaps/evaltest:1.0.0'",
             "--gin.REFERENCE_SPLIT='eval'", f"--gin.tasks.tfds_data_dir.data_dir='{data_dir}'"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == os.path.join(folder, "metrics.json")
  report = json.load(open(os.path.join(folder, "metrics.json"), encoding="utf-8"))
  assert sorted(report["reference"]["ids_present"]) == sorted(eh.MUSICCAPS_EVAL)
  assert report["reference"]["referenced_ids_missing"] == [eh.MUSICCAPS_GONE]
  assert report["reference"]["build_present_ids"] == len(eh.MUSICCAPS_EVAL)
  assert report["kl"]["pairing"] == "set_mean"   # one generation's reference is absent
  print(open(os.path.join(folder, "metrics.md"), encoding="utf-8").read())

  done = subprocess.run(command[:4] + [f"--gin.GENERATIONS_DIR='{tmp_path}/none'"]
                        + command[5:], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1].startswith(
      "musiclm_jax.evaluate: error: no generations.jsonl in the generation folder")


@pytest.mark.slow
def test_mcc_of_matching_captions_beats_mismatched_for_a_trained_tiny_mulan(tmp_path,
                                                                            monkeypatch):
  from musiclm_jax.mulan import mulan_tokenizer  # pylint: disable=import-outside-toplevel
  from musiclm_jax.evaluation.mulan_cycle import MuLanCycleConsistency  # pylint: disable=import-outside-toplevel
  from tests import mulan_helpers  # pylint: disable=import-outside-toplevel
  data_dir, model_dir = tmp_path / "tfds", tmp_path / "mulan"
  monkeypatch.setenv("MUSICLM_TFDS_DIR", str(data_dir))
  mulan_helpers.build(data_dir)
  model = mulan_helpers.pretrained_model()
  steps = 150
  mulan_helpers.train(model, model_dir, steps)
  wavs, captions = mulan_helpers.validation_pairs(data_dir)
  mcc = MuLanCycleConsistency(mulan_tokenizer.MuLanEmbedder.from_model_dir(model_dir, model))
  matched = mcc(captions, wavs)["mcc"]
  mismatched = mcc(captions[1:] + captions[:1], wavs)["mcc"]
  print(f"MCC over {len(captions)} validation clips: matching captions {matched:.3f}, "
        f"mismatched {mismatched:.3f}")
  assert matched > mismatched + 0.05

  # The command's library path reports the same thing from generation folders.
  half = len(captions) // 2
  reports = {}
  for name, texts in (("matched", captions[:half]), ("mismatched", captions[half:][::-1])):
    folder = eh.write_generation_folder(str(tmp_path / name), list(wavs[:half]), texts)
    path = evaluator.evaluate(generations_dir=folder, reference=mulan_helpers.PAIRS_TASK,
                               reference_split="validation", mulan_model=model,
                               mulan_model_dir=str(model_dir), max_references=16,
                               cache_dir=str(tmp_path / "cache"))
    reports[name] = json.load(open(path, encoding="utf-8"))
  print({name: r["mcc"] for name, r in reports.items()},
        reports["matched"]["fad"]["mulan"]["fad"])
  assert reports["matched"]["mcc"]["mcc"] > reports["mismatched"]["mcc"]["mcc"]
  assert reports["matched"]["fad"]["mulan"]["fad"] >= 0


def test_codec_reconstruction_scores_a_perfect_codec_above_an_untrained_one(references):
  import dataclasses  # pylint: disable=import-outside-toplevel
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from musiclm_jax.codec.acoustic_tokenizer import Codec  # pylint: disable=import-outside-toplevel
  from musiclm_jax.evaluation import eval_sets  # pylint: disable=import-outside-toplevel
  from musiclm_jax.codec.soundstream import SoundStreamCodec  # pylint: disable=import-outside-toplevel
  from tests import soundstream_helpers  # pylint: disable=import-outside-toplevel
  wavs, captions, ids = references
  clips = eval_sets.ClipSet(ids[:2], captions[:2], [w[:8000] for w in wavs[:2]], [eh.RATE] * 2)
  cfg = soundstream_helpers.tiny_config()
  untrained = Codec(cfg, nn.meta.unbox(SoundStreamCodec(cfg).init(
      soundstream_helpers.key(0), jnp.zeros((1, 640)))))

  @dataclasses.dataclass
  class PerfectCodec:
    config: object

    def reconstruct(self, wav):
      return wav

  perfect = evaluator.codec_reconstruction(PerfectCodec(cfg), clips)
  poor = evaluator.codec_reconstruction(untrained, clips)
  assert perfect["mel_distance"] == pytest.approx(0.0, abs=1e-6) and perfect["si_snr_db"] > 60
  assert poor["si_snr_db"] < 10 and poor["mel_distance"] > 0.1 and poor["num_clips"] == 2
