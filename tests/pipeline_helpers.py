"""Untrained MusicLM parts for the pipeline and text-to-audio tests.

`tiny_music_lm()` builds all six parts in memory, random-initialised and as small as the
codec / tokenizer tests make them; `write_parts(parts)` writes random checkpoints (trainer
format, + RVQ and k-means files) for the parts a gin file configured, so the command line
loads them exactly as it would load trained ones.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from musiclm_jax.core import checkpoints
from musiclm_jax.semantic import kmeans, semantic_tokenizer
from musiclm_jax.mulan import mulan_tokenizer
from musiclm_jax.inference import pipeline
from musiclm_jax.stages import token_layout
from musiclm_jax.codec.acoustic_tokenizer import Codec
from musiclm_jax.layers import rvq
from musiclm_jax.stages.stage_model import DecoderOnlyModel
from musiclm_jax.codec.soundstream import SoundStreamCodec
from musiclm_jax.core.train_state import TrainState
from musiclm_jax.stages.transformer import DecoderOnlyTransformer
from tests import mulan_helpers, soundstream_helpers, w2v_bert_helpers
from tests.helpers import tiny_transformer_config

LAYOUT = token_layout.TINY
# Short crops so a few seconds of audio already take several windows per stage.
CROPS = {"semantic": 1.0, "coarse": 0.6, "fine": 0.4}
CONTEXTS = {"semantic": 0.4, "coarse": 0.2}


def stage_model(name: str, **overrides) -> DecoderOnlyModel:
  stage = LAYOUT.stage(name)
  config = tiny_transformer_config(vocab_size=stage.vocab_size, **{"num_layers": 1, **overrides})
  return DecoderOnlyModel(DecoderOnlyTransformer(config), stage=stage)


def stage_params(model: DecoderOnlyModel, seed: int = 0):
  """Initialised under jit: op by op, the many small random initialisers take seconds."""
  return jax.jit(lambda rng: nn.meta.unbox(model.get_initial_variables(
      rng, {"decoder_input_tokens": (1, 8)})["params"]))(jax.random.key(seed))


def codec_variables(config, seed: int = 0):
  return jax.jit(lambda rng: nn.meta.unbox(SoundStreamCodec(config).init(
      rng, jnp.zeros((1, 640)))))(soundstream_helpers.key(seed))


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
  x = np.random.default_rng(seed).normal(size=(n, dim))
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def mulan_quantizer(embed_dim: int) -> mulan_tokenizer.MuLanQuantizer:
  return mulan_tokenizer.MuLanQuantizer.fit(
      unit_vectors(4 * LAYOUT.mulan_codebook_size, embed_dim), LAYOUT.mulan_levels,
      LAYOUT.mulan_codebook_size, jax.random.key(0), kmeans_iters=2)


def semantic_kmeans(width: int, layer: int = 1) -> kmeans.SemanticKMeans:
  k = LAYOUT.semantic_codebook_size
  return kmeans.SemanticKMeans(
      centroids=np.random.default_rng(1).normal(size=(k, width)).astype(np.float32),
      mean=np.zeros(width, np.float32), std=np.ones(width, np.float32),
      counts=np.ones(k, np.float32), layer=layer)


@functools.lru_cache(maxsize=None)
def _parts():
  codec_config = soundstream_helpers.tiny_config()
  codec = Codec(codec_config, codec_variables(codec_config))
  mulan_model = mulan_helpers.tiny_model()
  mulan = mulan_tokenizer.MuLanTokenizer(
      mulan_tokenizer.MuLanEmbedder(mulan_model, mulan_helpers.init_params(mulan_model)),
      mulan_quantizer(mulan_model.config.embed_dim))
  stages = {}
  for seed, name in enumerate(token_layout.STAGE_NAMES):
    model = stage_model(name)
    stages[name] = (model, stage_params(model, seed))
  return codec, mulan, stages


@functools.lru_cache(maxsize=None)
def _semantic_tokenizer():
  w2v_model = w2v_bert_helpers.tiny_model()
  return semantic_tokenizer.SemanticTokenizer(
      w2v_model, w2v_bert_helpers.init_params(w2v_model),
      semantic_kmeans(w2v_model.config.emb_dim))


def tiny_music_lm(with_semantic_tokenizer: bool = True, **kwargs) -> pipeline.MusicLM:
  """All six parts (the w2v-BERT only `with_semantic_tokenizer`, for continuation),
  untrained; short crops (CROPS) unless given."""
  codec, mulan, stages = _parts()
  kwargs = dict(dict(crop_seconds=CROPS, context_seconds=CONTEXTS), **kwargs)
  semantic = _semantic_tokenizer() if with_semantic_tokenizer else None
  return pipeline.MusicLM(codec=codec, mulan=mulan, stages=stages, semantic_tokenizer=semantic,
                          **kwargs)


@functools.lru_cache(maxsize=None)
def shared_music_lm() -> pipeline.MusicLM:
  """One text-only `tiny_music_lm()` per process: its samplers keep their compiled programs."""
  return tiny_music_lm(with_semantic_tokenizer=False)


def _save_train_state(model_dir, state: TrainState, step: int = 1) -> None:
  manager = checkpoints.create_manager(f"{model_dir}/checkpoints")
  checkpoints.save(manager, step, state)
  manager.wait_until_finished()
  manager.close()


def _params_checkpoint(model_dir, params) -> None:
  _save_train_state(model_dir, TrainState.create(params, optax.sgd(0.1).init(params)))


def write_parts(parts: pipeline.Parts) -> None:
  """Random checkpoints (and quantizer / k-means files) of every part `parts` configures."""
  config = parts.soundstream_config
  variables = codec_variables(config)
  _save_train_state(parts.soundstream_dir, TrainState.create(
      {"generator": variables["params"]}, optax.sgd(0.1).init(variables["params"]),
      {rvq.COLLECTION: variables[rvq.COLLECTION]}))
  mulan_model = parts.mulan_model
  _params_checkpoint(parts.mulan_dir, jax.jit(lambda rng: nn.meta.unbox(
      mulan_model.init_variables(rng)["params"]))(jax.random.key(0)))
  mulan_quantizer(mulan_model.config.embed_dim).save(mulan_tokenizer.rvq_path(parts.mulan_dir))
  for seed, name in enumerate(token_layout.STAGE_NAMES):
    model, model_dir = parts.stage(name)
    _params_checkpoint(model_dir, stage_params(model, seed))
  if parts.w2v_bert_dir:
    w2v_model = parts.w2v_bert_model
    _params_checkpoint(parts.w2v_bert_dir, w2v_bert_helpers.init_params(w2v_model))
    semantic_kmeans(w2v_model.config.emb_dim).save(
        semantic_tokenizer.centroids_path(parts.w2v_bert_dir))
