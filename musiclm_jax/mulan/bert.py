"""BERT (Devlin et al., 2019): MuLan's text tower, a post-LayerNorm Transformer encoder.

  tokens [batch, length] -> word + position + token-type embeddings -> LayerNorm
      -> num_layers x (self-attention -> add -> LayerNorm -> GELU MLP -> add -> LayerNorm)
      -> hidden [batch, length, embed]

The layout of the original BERT, not T5's: every projection has a bias, LayerNorm comes after
each residual sum, the GELU is the exact (erf) one and positions are learned absolute
embeddings. That is what lets pre-trained BERT-family weights (`minilm_weights.py`) load
unchanged; `layers/attention.py` (bias-free, relative positions) cannot hold them.

Sizes: `minilm_l6()` is the pre-trained MiniLM-L6 (384-d, 6 layers, 22.7M parameters with its
30,522-entry WordPiece embedding), `bert_base()` the paper's BERT-base (768-d, 12 layers,
~110M). Padding is token id 0 ([PAD] in BERT vocabularies); padded keys are masked out.
"""
import dataclasses

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax import lax

from musiclm_jax.stages.transformer import as_dtype

PAD_ID = 0
_NEG_INF = -1e10  # large but finite: a fully-padded row must not produce NaN
_EMBED_AXES = ("activation_batch", "activation_length", "activation_embed")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Defaults are MiniLM-L6-H384 (the pre-trained text tower)."""
  vocab_size: int = 30522
  emb_dim: int = 384
  num_heads: int = 12
  head_dim: int = 32
  mlp_dim: int = 1536
  num_layers: int = 6
  max_positions: int = 512
  type_vocab_size: int = 2
  dropout_rate: float = 0.1
  layer_norm_epsilon: float = 1e-12
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_layers",
                 "max_positions", "type_vocab_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"BertConfig.{name} must be positive, got {getattr(self, name)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"BertConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    as_dtype(self.dtype), as_dtype(self.param_dtype)


def minilm_l6(**overrides) -> BertConfig:
  return BertConfig(**overrides)


def bert_base(**overrides) -> BertConfig:
  kwargs = dict(emb_dim=768, num_heads=12, head_dim=64, mlp_dim=3072, num_layers=12)
  kwargs.update(overrides)
  return BertConfig(**kwargs)


gin.register(minilm_l6, module="bert")
gin.register(bert_base, module="bert")


def _init():
  # BERT's scale (std 0.02) for every kernel and embedding, drawn uniformly rather than from
  # BERT's truncated normal: same variance, but normal samples go through erfinv, whose XLA
  # compilation, once per shape, dominated initialising a small text tower on CPU.
  limit = 0.02 * 3 ** 0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -limit,
                                                                  limit)


class BiasedDense(nn.Module):
  """`x [..., *contracted] @ kernel [*contracted, *features] + bias [*features]`, with logical
  axes for both; the kernel has its true (possibly 3-D) shape, as in linears.DenseGeneral."""
  features: tuple
  kernel_axes: tuple
  bias_axes: tuple
  num_contracted: int = 1
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n = self.num_contracted
    kernel = self.param("kernel", nn.with_logical_partitioning(_init(), self.kernel_axes),
                        x.shape[x.ndim - n:] + tuple(self.features), self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.bias_axes),
                      tuple(self.features), self.param_dtype)
    contract = (tuple(range(x.ndim - n, x.ndim)), tuple(range(n)))
    y = lax.dot_general(jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype),
                        (contract, ((), ())))
    return y + jnp.asarray(bias, self.dtype)


def _layer_norm(cfg: BertConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=cfg.layer_norm_epsilon, dtype=as_dtype(cfg.dtype),
      param_dtype=as_dtype(cfg.param_dtype), name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))


class BertLayer(nn.Module):
  """One post-LN encoder layer `[batch, length, embed] -> [batch, length, embed]`."""
  config: BertConfig

  @nn.compact
  def __call__(self, x, key_mask, deterministic: bool):
    """key_mask: bool `[batch, length]`, False at padding (never attended to)."""
    cfg = self.config
    kw = dict(dtype=as_dtype(cfg.dtype), param_dtype=as_dtype(cfg.param_dtype))
    heads = (cfg.num_heads, cfg.head_dim)
    qkv = {name: BiasedDense(heads, ("embed", "heads", "kv"), ("heads", "kv"), name=name, **kw)(x)
           for name in ("query", "key", "value")}
    qkv_axes = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
    q, k, v = (nn.with_logical_constraint(qkv[n], qkv_axes) for n in ("query", "key", "value"))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q / jnp.sqrt(cfg.head_dim).astype(q.dtype), k)
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.asarray(_NEG_INF, logits.dtype))
    # Softmax in float32: bfloat16 exp/normalise loses too much.
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(kw["dtype"])
    weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=deterministic)
    attended = nn.with_logical_constraint(jnp.einsum("bhqk,bkhd->bqhd", weights, v), qkv_axes)
    out = BiasedDense((cfg.emb_dim,), ("heads", "kv", "embed"), ("embed",), num_contracted=2,
                      name="out", **kw)(attended)
    out = nn.Dropout(cfg.dropout_rate)(out, deterministic=deterministic)
    x = _layer_norm(cfg, "attention_norm")(x + out)
    x = nn.with_logical_constraint(x, _EMBED_AXES)

    h = BiasedDense((cfg.mlp_dim,), ("embed", "mlp"), ("mlp",), name="wi", **kw)(x)
    h = nn.gelu(h, approximate=False)  # BERT's GELU is the exact erf form
    h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", "activation_mlp"))
    h = BiasedDense((cfg.emb_dim,), ("mlp", "embed"), ("embed",), name="wo", **kw)(h)
    h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
    x = _layer_norm(cfg, "mlp_norm")(x + h)
    return nn.with_logical_constraint(x, _EMBED_AXES)


class BertEncoder(nn.Module):
  """`tokens int [batch, length] -> hidden [batch, length, embed]` (all segment 0)."""
  config: BertConfig

  @nn.compact
  def __call__(self, tokens, *, enable_dropout: bool = False):
    cfg = self.config
    if tokens.ndim != 2:
      raise ValueError(f"BERT takes token ids [batch, length], got shape {tokens.shape}")
    if tokens.shape[1] > cfg.max_positions:
      raise ValueError(f"{tokens.shape[1]} tokens exceed BERT's {cfg.max_positions} positions")
    kw = dict(dtype=as_dtype(cfg.dtype), param_dtype=as_dtype(cfg.param_dtype))

    def embed(num, axes, name):
      return nn.Embed(num, cfg.emb_dim, embedding_init=nn.with_logical_partitioning(_init(), axes),
                      name=name, **kw)

    x = (embed(cfg.vocab_size, ("vocab", "embed"), "word_embeddings")(tokens)
         + embed(cfg.max_positions, ("text_positions", "embed"), "position_embeddings")(
             jnp.arange(tokens.shape[1])[None, :])
         + embed(cfg.type_vocab_size, ("token_types", "embed"), "token_type_embeddings")(
             jnp.zeros_like(tokens)))
    x = _layer_norm(cfg, "embeddings_norm")(nn.with_logical_constraint(x, _EMBED_AXES))
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
    x = nn.with_logical_constraint(x, _EMBED_AXES)
    key_mask = tokens != PAD_ID
    layer_cls = nn.remat(BertLayer, static_argnums=(3,)) if cfg.remat else BertLayer
    for i in range(cfg.num_layers):
      x = layer_cls(cfg, name=f"layer_{i}")(x, key_mask, not enable_dropout)
    return x


def mean_pool(hidden, tokens):
  """`[batch, length, embed]` -> `[batch, embed]` mean over non-padding tokens (what the
  pre-trained MiniLM sentence embedding was trained with)."""
  mask = (tokens != PAD_ID).astype(hidden.dtype)[..., None]
  return jnp.sum(hidden * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
