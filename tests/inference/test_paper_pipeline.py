"""pipeline/paper.gin binds the six paper-size parts (no checkpoints: only their configs, and
the stages' parameter shapes traced)."""
import math

import gin
import jax
import pytest
from jax.sharding import AbstractMesh, AxisType

from musiclm_jax.core import gin_utils, partitioning
from musiclm_jax.inference import pipeline
from musiclm_jax.stages import decoding, generation, token_layout

PAPER = token_layout.PAPER


@pytest.fixture(scope="module")
def configured():
  dirs = [f"{name}_DIR = '/nonexistent/{name.lower()}'"
          for name in ("SOUNDSTREAM", "MULAN", "SEMANTIC", "COARSE", "FINE")]
  gin.clear_config()
  try:
    gin_utils.parse_gin(["pipeline/paper.gin"], dirs)
    yield (pipeline.Parts(), gin.query_parameter("pipeline.load.crop_seconds"),
           gin.query_parameter("pipeline.load.mesh_shape"))
  finally:
    gin.clear_config()


def test_the_stages_are_the_paper_transformers_with_their_vocabularies_and_crops(configured):
  parts, crops, _ = configured
  for name in token_layout.STAGE_NAMES:
    model, model_dir = parts.stage(name)
    assert model_dir == f"/nonexistent/{name}"
    assert model.stage == PAPER.stage(name)
    config = model.module.config
    assert (config.num_layers, config.emb_dim, config.num_heads, config.head_dim,
            config.mlp_dim, config.scan_layers) == (24, 1024, 16, 64, 4096, True)
    # The stage's ids padded to a multiple of 128, so any model axis up to 128 divides them.
    assert config.vocab_size % 128 == 0
    assert 0 <= config.vocab_size - PAPER.stage(name).vocab_size < 128
    assert model.default_decoder_params == {"temperature": decoding.STAGE_TEMPERATURES[name]}
    assert crops[name] == token_layout.STAGES[name]["crop_seconds"]


def test_the_tokenizers_share_the_paper_layout(configured):
  parts, _, _ = configured
  codec = parts.soundstream_config
  assert codec.layout == PAPER and codec.strides == (2, 4, 6, 10)
  assert (codec.num_levels, codec.codebook_size, codec.sample_rate, codec.hop) == (
      PAPER.acoustic_levels, PAPER.acoustic_codebook_size, PAPER.acoustic_sample_rate,
      PAPER.acoustic_hop)
  mulan = parts.mulan_model.config
  assert (mulan.window_seconds, mulan.embed_dim) == (10.0, 128)
  assert parts.w2v_bert_model.config.emb_dim == 1024 and parts.w2v_bert_dir is None


def test_the_v5e_8_mesh_splits_each_paper_stage_over_its_8_chips(configured):
  parts, _, mesh_shape = configured
  assert tuple(mesh_shape) == (1, 1, 8)
  # Shardings need no devices: the mesh of a v5e-8 host, abstractly.
  mesh = AbstractMesh(tuple(mesh_shape), partitioning.MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(partitioning.MESH_AXES))
  # Parameters with the vocabularies padded to 13,440 / 17,536 / 12,416 ids (+0.26M each).
  for name, millions in (("semantic", 430), ("coarse", 439), ("fine", 428)):
    model, _ = parts.stage(name)
    params = generation.abstract_params(model, mesh, partitioning.logical_axis_rules())
    leaves = jax.tree.leaves(params)
    assert round(sum(x.size for x in leaves) / 1e6) == millions
    shards = [math.prod(x.sharding.shard_shape(x.shape)) for x in leaves]
    assert all(shard in (x.size, x.size // 8) for shard, x in zip(shards, leaves))
    # The padded embedding and logits tables split over the 8 chips too (the stages' own
    # 12,290-17,410 ids would not divide); only the norm scales and bias tables stay whole.
    for table in (params["token_embedder"]["embedding"], params["logits_dense"]["kernel"]):
      assert math.prod(table.sharding.shard_shape(table.shape)) == table.size // 8
    # An eighth of every layer per chip.
    total = sum(x.size * x.dtype.itemsize for x in leaves)
    per_chip = sum(shard * x.dtype.itemsize for shard, x in zip(shards, leaves))
    assert per_chip < total / 5
