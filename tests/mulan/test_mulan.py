"""MuLan: the two towers, paper sizes, the pre-trained and frozen text tower, the (audio, text)
feature converter, and (slow) training through the one trainer until text finds its audio."""
import functools

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from musiclm_jax.mulan import bert, contrastive, minilm_weights, mulan, mulan_tokenizer
from musiclm_jax.core import optimizers
from musiclm_jax.core import gin_utils, trainer
from musiclm_jax.mulan.mulan_feature_converter import MuLanFeatureConverter
from tests import mulan_helpers

CAPTIONS = ["a calm piano melody", "loud drums", "soft strings", "a fast synth arpeggio"]


def _batch(model, batch=4, samples=8000, seed=0):
  rng = np.random.default_rng(seed)
  return {"audio": jnp.asarray(rng.normal(size=(batch, samples)).astype(np.float32) * 0.1),
          "text_tokens": jnp.asarray(model.tokenizer.tokenize((CAPTIONS * batch)[:batch]))}


def test_embeddings_are_unit_vectors_in_the_joint_space():
  model = mulan_helpers.tiny_model()
  params = mulan_helpers.init_params(model)
  batch = _batch(model)
  audio, text, log_scale = model.module.apply({"params": params}, batch["audio"],
                                              batch["text_tokens"])
  assert audio.shape == text.shape == (4, model.config.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(audio, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, rtol=1e-5)
  assert float(contrastive.logit_scale(log_scale)) == pytest.approx(1 / 0.07, rel=1e-5)
  # Any clip length works: the ResNet features are pooled over time.
  assert model.embed_audio(params, batch["audio"][:, :3000]).shape == (4, 16)


def test_attention_pooling_starts_as_the_mean_and_never_weighs_padding():
  model = mulan_helpers.tiny_model(config=mulan_helpers.tiny_config(text_pooling="attention",
                                                                    text_pool_heads=3))
  params = mulan_helpers.init_params(model)
  tokens = jnp.asarray(model.tokenizer.tokenize(CAPTIONS))
  hidden = jax.random.normal(jax.random.key(1), (*tokens.shape, model.config.text_tower.emb_dim))
  pool = lambda p, h: model.module.apply({"params": p}, h, tokens,
                                         method=lambda m, h, t: m._pool_text(h, t))  # pylint: disable=protected-access
  pooled = pool(params, hidden)
  mean = bert.mean_pool(hidden, tokens)
  assert params["text_pool_queries"].shape == (3, model.config.text_tower.emb_dim)
  np.testing.assert_allclose(pooled, jnp.tile(mean, (1, 3)), rtol=1e-5, atol=1e-6)
  # Learned queries weigh tokens unequally, but padding positions still count for nothing.
  queries = jax.random.normal(jax.random.key(2), params["text_pool_queries"].shape)
  params = dict(params, text_pool_queries=queries)
  padding = (tokens == bert.PAD_ID)[..., None]
  changed = jnp.where(padding, 100.0, hidden)
  np.testing.assert_allclose(pool(params, hidden), pool(params, changed), rtol=1e-5)
  assert not np.allclose(pool(params, hidden), jnp.tile(mean, (1, 3)), atol=1e-3)
  text = model.embed_text(params, tokens)
  np.testing.assert_allclose(np.linalg.norm(text, axis=-1), 1.0, rtol=1e-5)


def _tower_params(config):
  model = mulan.MuLanModel(mulan.MuLan(config))
  params = nn.meta.unbox(jax.eval_shape(lambda: model.init_variables(jax.random.key(0)))["params"])
  count = mulan.num_params
  return (count(params["audio_tower"]) + count(params["audio_projection"]),
          count(params["text_tower"]) + count(params["text_projection"]))


def test_paper_parameter_counts():
  audio, minilm_text = _tower_params(mulan.MuLanConfig())
  _, bert_base_text = _tower_params(mulan.MuLanConfig(text_tower=bert.bert_base(),
                                                      text_pooling="cls"))
  print(f"MuLan parameters: ResNet-50 audio tower {audio:,}, MiniLM-L6 text tower "
        f"{minilm_text:,}, BERT-base text tower {bert_base_text:,}")
  assert abs(audio - 25e6) <= 0.1 * 25e6          # ResNet-50 (one input channel, no head)
  assert abs(bert_base_text - 110e6) <= 0.1 * 110e6
  assert minilm_text == 22_565_376 + 384 * 128


def test_pretrained_text_tower_holds_the_minilm_weights():
  model = mulan_helpers.pretrained_model()
  variables = jax.jit(lambda rng: model.get_initial_variables(
      rng, {"audio": (2, 8000), "text_tokens": (2, 48)}))(jax.random.key(0))
  text_tower = nn.meta.unbox(variables["params"]["text_tower"])
  loaded = minilm_weights.load_params(model.config.text_tower)
  for path in (("word_embeddings", "embedding"), ("layer_5", "wo", "kernel"),
               ("layer_0", "query", "bias")):
    got, want = text_tower, loaded
    for key in path:
      got, want = got[key], want[key]
    np.testing.assert_array_equal(np.asarray(got), want)
  # Still boxed with its logical axes, so the trainer shards it like a fresh init.
  box = variables["params"]["text_tower"]["word_embeddings"]["embedding"]
  assert box.names == ("vocab", "embed")


def test_frozen_text_tower_gets_no_gradient_and_no_update():
  model = mulan_helpers.tiny_model(freeze_text_tower=True)
  params = mulan_helpers.init_params(model)
  grads = jax.jit(jax.grad(lambda p: model.loss_fn(p, _batch(model), None)[0]))(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["text_tower"]))
  assert float(jnp.abs(grads["text_projection"]["kernel"]).max()) > 0
  optimizer = model.make_optimizer(functools.partial(optimizers.create, clip_norm=0.0),
                                   optax.constant_schedule(1e-2))
  ones = jax.tree.map(jnp.ones_like, params)
  updates, _ = optimizer.update(ones, optimizer.init(params), params)
  assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates["text_tower"]))
  assert float(jnp.abs(updates["audio_projection"]["kernel"]).max()) > 0


def test_text_tower_warmup_gates_its_updates():
  model = mulan_helpers.tiny_model(text_tower_warmup_steps=2)
  params = mulan_helpers.init_params(model)
  optimizer = model.make_optimizer(functools.partial(optimizers.create, clip_norm=0.0),
                                   optax.constant_schedule(1e-2))
  state = optimizer.init(params)
  ones = jax.tree.map(jnp.ones_like, params)
  moved = []
  for _ in range(3):
    updates, state = optimizer.update(ones, state, params)
    moved.append(float(jnp.abs(updates["text_tower"]["layer_0"]["wi"]["kernel"]).max()) > 0)
    assert float(jnp.abs(updates["audio_projection"]["kernel"]).max()) > 0
  assert moved == [False, False, True]
  with pytest.raises(ValueError, match="exclude each other"):
    mulan_helpers.tiny_model(freeze_text_tower=True, text_tower_warmup_steps=5)


def test_bad_inputs_are_clear_errors():
  model = mulan_helpers.tiny_model()
  params = mulan_helpers.init_params(model)
  with pytest.raises(ValueError, match=r"add a batch axis"):
    model.embed_audio(params, jnp.zeros((8000,)))
  with pytest.raises(ValueError, match="empty wav"):
    model.embed_audio(params, jnp.zeros((2, 0)))
  with pytest.raises(ValueError, match="token ids"):
    model.embed_text(params, jnp.zeros((48,), jnp.int32))
  embedder = mulan_tokenizer.MuLanEmbedder(model, params)
  wav = np.zeros((3, 8000), np.float32)
  wav[1, 7] = np.nan
  with pytest.raises(ValueError, match=r"NaN/Inf samples in batch rows \[1\]"):
    embedder.embed_audio(wav)
  with pytest.raises(ValueError, match="caption 1 is empty"):
    embedder.embed_text(["fine", ""])
  with pytest.raises(ValueError, match="text_pooling"):
    mulan_helpers.tiny_config(text_pooling="max")
  with pytest.raises(ValueError, match="vocabulary .* 30522 entries .* embeds 1000"):
    mulan_helpers.tiny_model(config=mulan_helpers.tiny_config(
        text_tower=mulan_helpers.tiny_text_tower(vocab_size=1000)))


def test_feature_converter_tokenizes_pads_and_drops_empty_captions():
  model = mulan_helpers.tiny_model()
  ds = tf.data.Dataset.from_tensor_slices({
      "audio": tf.ones((3, 50)), "text": ["a calm piano", "  ", "loud drums"]})
  converted = list(model.FEATURE_CONVERTER_CLS(pack=False)(ds, {"audio": 64}).as_numpy_iterator())
  assert len(converted) == 2  # the blank caption is dropped
  assert converted[0]["audio"].shape == (64,) and converted[0]["audio"][50:].sum() == 0
  np.testing.assert_array_equal(converted[1]["text_tokens"],
                                model.tokenizer.tokenize(["loud drums"])[0])
  audio_only = tf.data.Dataset.from_tensor_slices({"audio": tf.ones((2, 50))})
  with pytest.raises(ValueError, match="only \\['audio'\\]"):
    model.FEATURE_CONVERTER_CLS(pack=False)(audio_only, {"audio": 64})
  with pytest.raises(ValueError, match="cannot pack"):
    MuLanFeatureConverter(model.tokenizer, pack=True)


@pytest.mark.parametrize("gin_files, window, text_layers, pretrained", [
    (["models/mulan/tiny.gin"], 32000, 6, True),
    (["models/mulan/paper.gin"], 160000, 6, True),
    (["models/mulan/paper.gin", "models/mulan/paper_bert_base.gin"], 160000, 12, False),
])
def test_gin_files_configure_mulan(gin_files, window, text_layers, pretrained):
  gin.clear_config()
  try:
    gin_utils.parse_gin([*gin_files, "runs/train.gin", "tasks/synthetic_music_pairs.gin"],
                        ["MODEL_DIR = '/tmp/unused'", "TRAIN_STEPS = 10"])
    model = gin.query_parameter("MODEL/macro.value").scoped_configurable_fn()
    with gin.config_scope("train"):
      dataset = trainer.DatasetConfig()
  finally:
    gin.clear_config()
  assert dataset.task_feature_lengths == {"audio": window}
  assert model.config.window_samples == window
  assert model.config.text_tower.num_layers == text_layers
  assert model.pretrained_text_tower == pretrained


@pytest.mark.slow
def test_tiny_mulan_trains_and_text_retrieves_its_audio(tmp_path, monkeypatch):
  data_dir, model_dir = tmp_path / "tfds", tmp_path / "mulan"
  monkeypatch.setenv("MUSICLM_TFDS_DIR", str(data_dir))
  mulan_helpers.build(data_dir)
  model = mulan_helpers.pretrained_model()
  wavs, captions = mulan_helpers.validation_pairs(data_dir)

  def validate(params):
    embedder = mulan_tokenizer.MuLanEmbedder(model, params)
    audio, text = embedder.embed_audio(wavs), embedder.embed_text(captions)
    loss, _ = contrastive.info_nce(jnp.asarray(audio), jnp.asarray(text),
                                   params["log_logit_scale"])
    return float(loss), contrastive.recall_at_k(text, audio)

  steps = 200
  initial = jax.jit(lambda rng: nn.meta.unbox(model.get_initial_variables(
      rng, {"audio": (1, mulan_helpers.WINDOW)})["params"]))(jax.random.key(0))
  loss_before, recall_before = validate(initial)
  state = mulan_helpers.train(model, model_dir, steps)
  loss_after, recall_after = validate(state.params)
  print(f"validation InfoNCE over {len(captions)} pairs: {loss_before:.3f} -> {loss_after:.3f}; "
        f"text->audio before {recall_before}, after {recall_after}")
  assert loss_after < loss_before - 0.5
  assert recall_after["R@1"] >= 5 * recall_after["chance_R@1"]

  # 12 MuLan tokens per clip, for audio and for text, from the saved model and quantizer.
  rvq_cfg = trainer.DatasetConfig(mulan_helpers.PAIRS_TASK, {"audio": 2 * mulan_helpers.WINDOW},
                                  batch_size=16, shuffle=False, num_epochs=1)
  mulan_tokenizer.fit_rvq(model=model, model_dir=str(model_dir), dataset_cfg=rvq_cfg,
                       num_levels=12, codebook_size=16)
  tokenizer = mulan_tokenizer.MuLanTokenizer.from_model_dir(model_dir, model)
  audio_tokens, text_tokens = tokenizer.audio_to_tokens(wavs), tokenizer.text_to_tokens(captions)
  assert audio_tokens.shape == text_tokens.shape == (len(captions), 12)
  assert audio_tokens.max() < 16 and text_tokens.min() >= 0
