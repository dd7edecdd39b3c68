"""w2v-BERT (Chung et al. 2021): the self-supervised audio model behind MusicLM's semantic tokens.

  wav 16 kHz -> log-mel (80 x 10 ms) -> conv subsampling (4x, 25 Hz) -> features z
  z -> Gumbel quantizer -> target codewords q and their ids          (unmasked input)
  z, span-masked -> contrastive Conformer stack -> context c -> contrastive loss vs q
  c -> MLM Conformer stack -> logits -> cross-entropy vs the ids at masked frames
  loss = contrastive + diversity_weight * diversity + MLM  (w2v-BERT §3.3, wav2vec 2.0 §3.3)

MusicLM §3.1 / AudioLM §III take the semantic tokens from layer 7 of the MLM stack
(`W2vBertModel.features`), normalised per dimension and clustered by k-means (kmeans.py).
Frame rule: a clip of S samples gives ceil(S / 640) frames (the wav is zero-padded to a
multiple of 640 samples; see `W2vBert.encode`).
"""
import dataclasses
import math

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp

from musiclm_jax.core import audio, base_model
from musiclm_jax.semantic import masking
from musiclm_jax.semantic import w2v_bert_losses as losses
from musiclm_jax.data.audio_feature_converter import AudioFeatureConverter
from musiclm_jax.layers.conformer import ConformerStack, layer_norm
from musiclm_jax.layers.conv_subsampling import SUBSAMPLING_FACTOR, ConvSubsampling
from musiclm_jax.layers.linears import dense
from musiclm_jax.stages.transformer import as_dtype
from musiclm_jax.semantic.w2v_bert_quantizer import GumbelQuantizer

_EMBED_AXES = ("activation_batch", "activation_length", "activation_embed")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class W2vBertConfig:
  """Sizes live in musiclm_jax/gin/models/w2v_bert/{tiny,base,paper}.gin; defaults are the paper's XL."""
  sample_rate: int = 16000
  num_mels: int = 80
  mel_hop: int = 160            # 10 ms
  mel_window: int = 400         # 25 ms
  subsampling_channels: int = 128
  emb_dim: int = 1024
  num_heads: int = 8
  head_dim: int = 128
  mlp_dim: int = 4096
  conv_kernel_size: int = 5
  num_contrastive_layers: int = 12
  num_mlm_layers: int = 12
  codebook_size: int = 1024     # one codebook (G = 1, V = 1024), w2v-BERT §4.2
  codebook_dim: int = 256       # codewords and the contrastive projection
  mask_prob: float = 0.065
  mask_span: int = 10
  num_distractors: int = 100
  contrastive_temperature: float = 0.1
  diversity_weight: float = 0.1
  gumbel_start: float = 2.0     # Gumbel-softmax temperature: start * decay^step, >= end
  gumbel_end: float = 0.5
  gumbel_decay: float = 0.999995
  dropout_rate: float = 0.1
  relpos_num_buckets: int = 32
  relpos_max_distance: int = 128
  dtype: str = "float32"
  param_dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    for name in ("sample_rate", "num_mels", "mel_hop", "mel_window", "subsampling_channels",
                 "emb_dim", "num_heads", "head_dim", "mlp_dim", "conv_kernel_size",
                 "num_contrastive_layers", "num_mlm_layers", "codebook_size", "codebook_dim",
                 "mask_span", "num_distractors"):
      if getattr(self, name) <= 0:
        raise ValueError(f"W2vBertConfig.{name} must be positive, got {getattr(self, name)}")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"W2vBertConfig.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    as_dtype(self.dtype), as_dtype(self.param_dtype)

  @property
  def hop(self) -> int:
    """Samples per output frame: 160 x 4 = 640 at 16 kHz, i.e. 25 Hz."""
    return self.mel_hop * SUBSAMPLING_FACTOR

  def num_frames(self, num_samples: int) -> int:
    return math.ceil(num_samples / self.hop)

  def stack(self, num_layers: int, name: str) -> ConformerStack:
    return ConformerStack(
        num_layers, self.num_heads, self.head_dim, self.mlp_dim, self.conv_kernel_size,
        self.dropout_rate, self.relpos_num_buckets, self.relpos_max_distance, self.remat,
        dtype=as_dtype(self.dtype), param_dtype=as_dtype(self.param_dtype), name=name)


def check_wav(wav) -> None:
  """Shape errors at trace time, with the fix in the message."""
  if wav.ndim != 2:
    raise ValueError(f"w2v-BERT takes wav [batch, samples] at 16 kHz, got shape {wav.shape}"
                     + ("; add a batch axis: wav[None]" if wav.ndim == 1 else ""))
  if wav.shape[1] == 0:
    raise ValueError("w2v-BERT got an empty wav (0 samples)")


class W2vBert(nn.Module):
  """The network; `W2vBertModel` holds its losses and the trainer hooks."""
  config: W2vBertConfig

  def setup(self):
    cfg = self.config
    kw = dict(dtype=as_dtype(cfg.dtype), param_dtype=as_dtype(cfg.param_dtype))
    self.feature_encoder = ConvSubsampling(cfg.emb_dim, cfg.subsampling_channels, **kw)
    self.feature_norm = layer_norm("embed", name="feature_norm", **kw)
    # wav2vec 2.0: masked frames become one learned vector shared by all of them.
    self.mask_embedding = self.param(
        "mask_embedding", nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("embed",)),
        (cfg.emb_dim,), kw["param_dtype"])
    self.quantizer = GumbelQuantizer(cfg.codebook_size, cfg.codebook_dim, **kw)
    self.contrastive_stack = cfg.stack(cfg.num_contrastive_layers, "contrastive_stack")
    self.context_projection = dense(cfg.codebook_dim, ("embed", "codebook_dim"),
                                    name="context_projection", **kw)
    self.mlm_stack = cfg.stack(cfg.num_mlm_layers, "mlm_stack")
    self.mlm_head = dense(cfg.codebook_size, ("embed", "vocab"), name="mlm_head", **kw)
    self.dropout = nn.Dropout(cfg.dropout_rate)

  def encode(self, wav, *, enable_dropout: bool = False):
    """`[batch, samples] -> [batch, ceil(samples / 640), embed]` features z."""
    cfg = self.config
    check_wav(wav)
    frames = cfg.num_frames(wav.shape[1])
    wav = jnp.pad(wav.astype(jnp.float32), ((0, 0), (0, frames * cfg.hop - wav.shape[1])))
    log_mel = audio.log_mel_spectrogram(wav, cfg.sample_rate, n_fft=cfg.mel_window,
                                        hop=cfg.mel_hop, n_mels=cfg.num_mels)
    # A centred STFT of 4T hops has 4T + 1 frames; the last is centred on the clip's end, so
    # dropping it makes the rate exactly one vector per 640 samples.
    log_mel = log_mel[:, :frames * SUBSAMPLING_FACTOR]
    z = self.feature_norm(self.feature_encoder(log_mel))
    z = self.dropout(z, deterministic=not enable_dropout)
    return nn.with_logical_constraint(z, _EMBED_AXES)

  def __call__(self, wav, mask, *, enable_dropout: bool = True, gumbel_temperature=1.0):
    """wav `[batch, samples]`, mask bool `[batch, frames]` -> dict of `[batch, frames, ...]`:
    context and quantized `[.., codebook_dim]`, code_ids `[..]`, quantizer_logits and
    mlm_logits `[.., codebook_size]`. Training (`enable_dropout`) samples Gumbel noise from
    the "gumbel" rng stream."""
    z = self.encode(wav, enable_dropout=enable_dropout)
    quantized, code_ids, quantizer_logits = self.quantizer(
        z, temperature=gumbel_temperature, stochastic=enable_dropout)
    masked = jnp.where(mask[..., None], jnp.asarray(self.mask_embedding, z.dtype), z)
    deterministic = not enable_dropout
    c = self.contrastive_stack(masked, deterministic=deterministic)[-1]
    m = self.mlm_stack(c, deterministic=deterministic)[-1]
    mlm_logits = self.mlm_head(m).astype(jnp.float32)
    return {"context": self.context_projection(c), "quantized": quantized, "code_ids": code_ids,
            "quantizer_logits": quantizer_logits,
            "mlm_logits": nn.with_logical_constraint(
                mlm_logits, ("activation_batch", "activation_length", "activation_vocab"))}

  def features(self, wav, layer: int):
    """Output of MLM-stack layer `layer` (1-based), unmasked, no dropout:
    `[batch, samples] -> [batch, ceil(samples / 640), embed]`."""
    num_mlm = self.config.num_mlm_layers
    if not 1 <= layer <= num_mlm:
      raise ValueError(f"feature layer {layer} is not an MLM layer of this w2v-BERT (it has "
                       f"{num_mlm}: 1..{num_mlm}); bind e.g. SEMANTIC_LAYER = {num_mlm}")
    c = self.contrastive_stack(self.encode(wav), deterministic=True)[-1]
    return self.mlm_stack(c, deterministic=True, num_layers_to_run=layer)[-1]


@gin.configurable
class W2vBertModel(base_model.BaseModel):
  """w2v-BERT for the trainer: batches are `{"audio": float32 [batch, samples]}` at 16 kHz."""
  FEATURE_CONVERTER_CLS = AudioFeatureConverter

  def __init__(self, module: W2vBert):
    self.module = module
    self.config = module.config

  def get_initial_variables(self, rng, input_shapes, input_types=None):
    shape = input_shapes["audio"]
    mask = jnp.zeros((shape[0], self.config.num_frames(shape[1])), bool)
    return self.module.init({"params": rng, "dropout": rng, "gumbel": rng},
                            jnp.zeros(shape, jnp.float32), mask, enable_dropout=False)

  def gumbel_temperature(self, step):
    cfg = self.config
    return jnp.maximum(cfg.gumbel_end, cfg.gumbel_start * cfg.gumbel_decay ** step)

  def loss_fn(self, params, batch, dropout_rng):
    """Training when `dropout_rng` is given; else evaluation with a fixed mask, no noise."""
    cfg = self.config
    wav = batch["audio"]
    training = dropout_rng is not None
    rng = dropout_rng if training else jax.random.key(0)
    mask_rng, distractor_rng, gumbel_rng, dropout_rng = jax.random.split(rng, 4)
    frames = cfg.num_frames(wav.shape[1])
    mask = masking.span_mask(mask_rng, wav.shape[0], frames, cfg.mask_prob, cfg.mask_span)
    # The train step adds the annealed temperature per example (it has the step; loss_fn not).
    temperature = jnp.mean(batch["gumbel_temperature"]) if "gumbel_temperature" in batch else (
        cfg.gumbel_end)
    out = self.module.apply({"params": params}, wav, mask, enable_dropout=training,
                            gumbel_temperature=temperature,
                            rngs={"dropout": dropout_rng, "gumbel": gumbel_rng})
    distractors, valid = losses.sample_distractors(distractor_rng, mask, cfg.num_distractors)
    contrastive, contrastive_metrics = losses.contrastive_loss(
        out["context"], out["quantized"], out["code_ids"], mask, distractors, valid,
        cfg.contrastive_temperature)
    diversity, perplexity = losses.diversity_loss(out["quantizer_logits"])
    mlm, mlm_metrics = base_model.cross_entropy_with_z_loss(
        out["mlm_logits"], jax.lax.stop_gradient(out["code_ids"]), mask.astype(jnp.float32),
        z_loss=0.0)
    loss = contrastive + cfg.diversity_weight * diversity + mlm
    metrics = {"contrastive_loss": contrastive, "diversity_loss": diversity, "mlm_loss": mlm,
               "mlm_accuracy": mlm_metrics["accuracy"], "code_perplexity": perplexity,
               "mask_fraction": jnp.mean(mask.astype(jnp.float32)),
               "gumbel_temperature": jnp.asarray(temperature, jnp.float32),
               **contrastive_metrics}
    return loss, metrics

  def train_step(self, state, batch, rng, optimizer, num_microbatches: int = 1):
    # Per example, so microbatch splitting slices it like any other feature.
    temperature = jnp.full((batch["audio"].shape[0],), self.gumbel_temperature(state.step))
    return super().train_step(state, dict(batch, gumbel_temperature=temperature), rng,
                              optimizer, num_microbatches)

  def features(self, params, wav, layer: int):
    """`[batch, samples] -> [batch, ceil(samples / 640), embed]` from MLM layer `layer`."""
    return self.module.apply({"params": params}, wav, layer, method=W2vBert.features)


gin.external_configurable(W2vBert, module="w2v_bert")
