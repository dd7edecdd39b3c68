"""Tokenizing tasks without Beam: the preprocessor skips and counts bad clips and keeps every good
one, the cache check refuses other tokenizers, configuration comes from the environment."""
import logging
import os
import subprocess
import sys

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from musiclm_jax.stages import token_layout
from musiclm_jax.data import token_tasks
from tests.data.test_music_tokenizers import (TOKENS_GIN, music, parse_tiny_tokenizers_gin,
                                         tiny_tokenizer_bindings)
from tests.data.test_music_tokenizers import tiny  # pylint: disable=unused-import  (fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATE = 16000
MIN_SECONDS = 4.0


def _dataset(clips):
  ids = list(clips)
  return tf.data.Dataset.from_tensor_slices(ids).map(lambda i: {"id": i}).map(
      lambda ex: {"id": ex["id"], "audio": tf.numpy_function(
          lambda i: clips[i.decode()], [ex["id"]], tf.float32)})


def test_bad_clips_are_skipped_counted_and_logged_and_every_good_one_comes_out(tiny, caplog):
  _, _, tokenizers = tiny
  noisy = music(4.0, seed=5)
  noisy[100] = np.nan
  clips = {"good-4s": music(4.0, seed=1), "silent": np.zeros(4 * RATE, np.float32),
           "nan": noisy, "inf": np.full(4 * RATE, np.inf, np.float32),
           "too-short": music(3.5, seed=2), "empty": np.zeros(0, np.float32),
           "good-4.5s": music(4.5, seed=3)}
  before = token_tasks.skipped_counts()
  with caplog.at_level(logging.WARNING):
    out = list(token_tasks.tokenize_clips(
        _dataset(clips), task_name="t", layout=token_layout.TINY, sample_rate=RATE,
        min_seconds=MIN_SECONDS, load=lambda: tokenizers).as_numpy_iterator())
  assert [ex["id"].decode() for ex in out] == ["good-4s", "good-4.5s"]
  for ex in out:
    direct = tokenizers.tokenize(clips[ex["id"].decode()], RATE)
    for stream in ("mulan", "semantic", "acoustic"):
      np.testing.assert_array_equal(ex[stream], direct[stream])
    assert ex["tokenizers"].decode() == tokenizers.fingerprint
  assert out[1]["semantic"].shape == (int(4.5 * 25),)
  after = token_tasks.skipped_counts()
  assert {k: after.get(k, 0) - before.get(k, 0) for k in after} == {
      "silent": 1, "non_finite": 2, "too_short": 1, "empty": 1}
  for clip_id, reason in (("silent", "silent"), ("nan", "non_finite"),
                          ("too-short", "too_short"), ("empty", "empty")):
    assert f"skipping clip {clip_id} ({reason})" in caplog.text


def test_rendered_scores_clips_are_tokenized_with_their_clip_ids_and_caption_codes(tiny,
                                                                                     tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from musiclm_jax.data import rendered_scores  # pylint: disable=import-outside-toplevel
  _, _, tokenizers = tiny
  spec = token_tasks.rendered_scores_spec("tiny")
  builder = rendered_scores.ensure_built("tiny", tmp_path)
  clips = builder.as_dataset(split="validation", shuffle_files=False)
  selected = token_tasks.select_clip(clips, id_key=spec.id_key, id_prefix="rendered_scores/tiny/",
                                     caption_key=spec.caption_key)
  out = list(token_tasks.tokenize_clips(
      selected, task_name=spec.name, layout=spec.layout, sample_rate=spec.sample_rate,
      min_seconds=spec.min_seconds, load=lambda: tokenizers).as_numpy_iterator())
  examples = list(tfds.as_numpy(clips))
  assert [ex["id"].decode() for ex in out] == [
      "rendered_scores/tiny/" + ex["clip_id"].decode() for ex in examples]
  for ex, source in zip(out, examples):
    assert ex["semantic"].shape == (4 * 25,)
    np.testing.assert_array_equal(
        ex["mulan_text"], tokenizers.mulan.text_to_tokens([source["caption"].decode()])[0])


def test_tokenizers_of_another_layout_are_refused(tiny):
  _, _, tokenizers = tiny
  dataset = token_tasks.tokenize_clips(
      _dataset({"a": music(4.0)}), task_name="paper_task", layout=token_layout.PAPER,
      sample_rate=RATE, min_seconds=MIN_SECONDS, load=lambda: tokenizers)
  with pytest.raises(tf.errors.InvalidArgumentError, match="paper_task is registered for"):
    next(dataset.as_numpy_iterator())


def test_cached_clips_of_other_tokenizers_are_refused_when_tokenizers_are_configured(tiny):
  ckpts, _, _ = tiny
  made_here = ckpts.fingerprint()

  def read(fingerprint):
    ds = tf.data.Dataset.from_tensors({"semantic": tf.zeros([3], tf.int32),
                                       "tokenizers": tf.constant(fingerprint)})
    return list(token_tasks.check_tokenizers(ds, "t").as_numpy_iterator())

  gin.clear_config()
  assert len(read("anything")) == 1   # nothing configured: nothing to compare with
  parse_tiny_tokenizers_gin(os.path.dirname(ckpts.soundstream_dir))
  try:
    assert len(read(made_here)) == 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="made by other tokenizers"):
      read(made_here.replace("@1", "@2"))
  finally:
    gin.clear_config()


def test_the_environment_configures_tokenizers_and_cache_dirs_for_cache_tasks_main(tiny, tmp_path):
  ckpts, _, _ = tiny
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env[token_tasks.TOKENIZERS_GIN_ENV] = TOKENS_GIN
  env[token_tasks.TOKENIZERS_BINDINGS_ENV] = "; ".join(
      tiny_tokenizer_bindings(os.path.dirname(ckpts.soundstream_dir)))
  env[token_tasks.CACHE_DIR_ENV] = str(tmp_path)
  script = ("import seqio, musiclm_jax.data.token_tasks as t; "
            "from musiclm_jax.data import music_tokenizers as m;"
            "print(m.configured_fingerprint()); print(t.seqio_cache_dirs())")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == [ckpts.fingerprint(), str([str(tmp_path)])]


def test_an_uncached_task_says_how_to_cache_it(tmp_path, monkeypatch):
  monkeypatch.setenv(token_tasks.CACHE_DIR_ENV, str(tmp_path))
  task = seqio.get_mixture_or_task("musiccaps_tokens_24k")
  with pytest.raises(FileNotFoundError, match="seqio.scripts.cache_tasks_main --module_import="
                                               "musiclm_jax.data.token_tasks --tasks=musiccaps_tokens_24k"):
    task.get_dataset(None, "eval", use_cached=True)


def test_every_builder_config_has_a_tokenizing_task_and_stage_tasks():
  names = set(seqio.TaskRegistry.names())
  for task in ("synthetic_music_tokens_tiny", "synthetic_music_tokens_demo",
               "synthetic_music_tokens_16k",
               "fma_tokens_small_24k", "fma_tokens_full_16k", "musiccaps_tokens_24k",
               "rendered_scores_tokens_demo", "rendered_scores_tokens_full_24k"):
    assert task in names
    assert seqio.get_mixture_or_task(task).requires_caching
    for stage in token_layout.STAGE_NAMES:
      assert {f"{task}_{stage}", f"{task}_{stage}_eval"} <= names
  tiny_spec = token_tasks.synthetic_music_spec("tiny")
  assert tiny_spec.layout == token_layout.TINY and tiny_spec.min_seconds == 4.0
  assert token_tasks.synthetic_music_spec("demo").crop_seconds == tiny_spec.crop_seconds
  assert token_tasks.synthetic_music_spec("24k").crop_seconds == {
      "semantic": 10.0, "coarse": 10.0, "fine": 3.0}
  assert token_tasks.token_task_crop_seconds("fma_tokens_small_24k", "semantic") == 29.0
  with pytest.raises(ValueError, match="'nope' is not a registered tokenizing task"):
    token_tasks.token_task_crop_seconds("nope", "fine")


@pytest.mark.parametrize("gin_file, task", [
    ("tasks/synthetic_music_tokens.gin", "synthetic_music_tokens_tiny"),
    ("tasks/fma_tokens.gin", "fma_tokens_small_24k"),
    ("tasks/musiccaps_tokens.gin", "musiccaps_tokens_24k"),
    ("tasks/rendered_scores_tokens.gin", "rendered_scores_tokens_demo"),
])
def test_each_tokens_gin_binds_tokenizers_of_its_tasks_layout(gin_file, task):
  from musiclm_jax.core import gin_utils  # pylint: disable=import-outside-toplevel
  from musiclm_jax.data import music_tokenizers
  gin.clear_config()
  try:
    gin_utils.parse_gin([gin_file], ["SOUNDSTREAM_DIR = '/m/ss'", "W2V_BERT_DIR = '/m/w2v'",
                                     "MULAN_DIR = '/m/mulan'"])
    models = music_tokenizers.TokenizerModels()
    assert music_tokenizers.TokenizerCheckpoints().mulan_dir == "/m/mulan"
  finally:
    gin.clear_config()
  spec = token_tasks._REGISTERED[task]  # pylint: disable=protected-access
  assert models.layout == spec.layout
  assert models.soundstream_config.layout == spec.layout
