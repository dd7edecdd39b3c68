"""`python -m seqio.scripts.cache_tasks_main` (Beam DirectRunner) caches a tokenizing task built
on tiny random-init tokenizers over a small synthetic set; the stage tasks read the cache, and
what they read is the direct tokenization of the same clip.

Importing this module registers the tokenizing task of `CONFIG` (16 + 4 clips of 4 s): the
cache run imports it with --module_import, as a user imports the module of their own tasks.
"""
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest
import seqio
import tensorflow as tf

from musiclm_jax.data import music_tokenizers
from musiclm_jax.inference import conditioning_index
from musiclm_jax.inference.conditioning_index import ConditioningIndex
from musiclm_jax.stages import token_layout
from musiclm_jax.data import synthetic_music, tfds_audio, token_tasks
from tests.data.test_music_tokenizers import (TOKENS_GIN, parse_tiny_tokenizers_gin,
                                         tiny_tokenizer_bindings, write_tiny_tokenizers)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = synthetic_music.SyntheticMusicConfig(
    name="tokens_test", description="tokenizing-task tests: 4 s clips at 16 kHz",
    sample_rate=16000, seconds=4.0, num_train=16, num_validation=4, seed=11)
TOKEN_TASK = token_tasks.register_synthetic_music_token_tasks(CONFIG, layout=token_layout.TINY)
LAYOUT = token_layout.TINY


def _cache(root, data_dir, cache_dir, *flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  env[token_tasks.TOKENIZERS_GIN_ENV] = TOKENS_GIN
  env[token_tasks.TOKENIZERS_BINDINGS_ENV] = "; ".join(tiny_tokenizer_bindings(root))
  return subprocess.run(
      [sys.executable, "-m", "seqio.scripts.cache_tasks_main",
       "--module_import=tests.data.test_cache_tasks", f"--tasks={TOKEN_TASK}",
       f"--output_cache_dir={cache_dir}", f"--tfds_data_dir={data_dir}", "--min_shards=2",
       "--pipeline_options=--runner=DirectRunner", *flags],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _clips(data_dir, split, what="audio"):
  """{clip id: float32 audio (or its caption)} of a split of the built set."""
  builder = synthetic_music.builder(CONFIG, data_dir)
  return {f"synthetic_music/{CONFIG.name}/{ex['clip_index']}":
          tfds_audio.pcm_to_float(ex["audio"]) if what == "audio" else ex[what].decode()
          for ex in builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator()}


@pytest.mark.slow
def test_cache_tasks_main_caches_the_tokens_that_the_stage_tasks_then_read(tmp_path):
  root, data_dir, cache_dir = tmp_path / "tokenizers", tmp_path / "tfds", tmp_path / "cache"
  parse_tiny_tokenizers_gin(root)
  try:
    write_tiny_tokenizers(root)
    synthetic_music.ensure_built(CONFIG, str(data_dir))
    result = _cache(root, data_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    task_dir = cache_dir / seqio.get_task_dir_from_name(TOKEN_TASK)
    assert (task_dir / "COMPLETED").exists()

    seqio.add_global_cache_dirs([str(cache_dir)])
    task = seqio.get_mixture_or_task(TOKEN_TASK)
    assert task.get_cached_stats("train")["examples"] == CONFIG.num_train
    # The conditioning index holds the distinct tuples the stages train on: the captions'
    # codes, or (rate 0, the default) the clips' audio codes.
    train = list(task.get_dataset(None, "train", use_cached=True, shuffle=False)
                 .as_numpy_iterator())
    for feature, index in (
        ("mulan_text", ConditioningIndex.from_token_task(TOKEN_TASK, ("mulan_text",))),
        ("mulan", ConditioningIndex.load(conditioning_index.build(
            TOKEN_TASK, str(tmp_path / "index.npz"))))):
      tuples = [tuple(ex[feature]) for ex in train]
      assert sorted(map(tuple, index.codes.tolist())) == sorted(set(tuples))
      assert index.counts.sum() == CONFIG.num_train
    tokenizers = music_tokenizers.load_music_tokenizers()
    clips = _clips(data_dir, "validation")
    captions = _clips(data_dir, "validation", "caption")
    cached = {ex["id"].decode(): ex for ex in task.get_dataset(
        None, "validation", use_cached=True, shuffle=False).as_numpy_iterator()}
    assert sorted(cached) == sorted(clips)
    for clip_id, wav in clips.items():
      direct = tokenizers.tokenize(wav, CONFIG.sample_rate)
      assert cached[clip_id]["tokenizers"].decode() == tokenizers.fingerprint
      for stream in ("mulan", "semantic", "acoustic"):
        np.testing.assert_array_equal(cached[clip_id][stream], direct[stream])
      np.testing.assert_array_equal(cached[clip_id]["mulan_text"],
                                    tokenizers.mulan.text_to_tokens([captions[clip_id]])[0])

    # The semantic stage reads the whole 4 s clip: MuLan ids, then semantic ids + EOS.
    stage = LAYOUT.stage("semantic")
    name = f"{TOKEN_TASK}_semantic_eval"
    for ex in seqio.get_mixture_or_task(name).get_dataset(
        None, "validation", shuffle=False).as_numpy_iterator():
      direct = tokenizers.tokenize(clips[ex["id"].decode()], CONFIG.sample_rate)
      np.testing.assert_array_equal(ex["inputs"], stage.encode("mulan", direct["mulan"]))
      np.testing.assert_array_equal(
          ex["targets"], np.append(stage.encode("semantic", direct["semantic"][:, None]),
                                   token_layout.EOS_ID))

    # A reader configured with other tokenizers refuses the cache and says why.
    other = tmp_path / "other"
    shutil.copytree(root, other)
    parse_tiny_tokenizers_gin(other)
    with pytest.raises(tf.errors.InvalidArgumentError, match="made by other tokenizers"):
      next(seqio.get_mixture_or_task(name).get_dataset(
          None, "validation", shuffle=False).as_numpy_iterator())
  finally:
    gin.clear_config()
