"""Tiny configurations shared by tests (audiocraft-style debug models built in code)."""
from musiclm_jax.stages.transformer import DecoderOnlyTransformer, TransformerConfig
from musiclm_jax.stages.stage_model import DecoderOnlyModel


def tiny_transformer_config(**overrides) -> TransformerConfig:
  kwargs = dict(vocab_size=64, emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64, num_layers=2,
                dropout_rate=0.0)
  kwargs.update(overrides)
  return TransformerConfig(**kwargs)


def tiny_decoder_model(**overrides) -> DecoderOnlyModel:
  return DecoderOnlyModel(DecoderOnlyTransformer(tiny_transformer_config(**overrides)))
