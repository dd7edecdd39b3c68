"""MusicLM's three frozen tokenizers as one bundle: audio -> MuLan, semantic and acoustic codes.

  tokenizers = MusicTokenizers.from_checkpoints(
      TokenizerCheckpoints("/m/soundstream", "/m/w2v_bert", "/m/mulan"), layout=token_layout.TINY,
      soundstream_config=..., w2v_bert_model=..., mulan_model=...)
  streams = tokenizers.tokenize(wav, sample_rate=44100)
  # {"mulan": int32 [Lm], "semantic": int32 [Ts], "acoustic": int32 [Ta, Q]}   (codes, no offsets)

or, with the checkpoints and models bound in gin (musiclm_jax/gin/tasks/*_tokens.gin), `load_music_tokenizers()`.

Any rate and length in: the clip is cut to a whole number of steps of 1 / gcd(frame rates) s
(40 ms for 25 and 50 Hz), so `Ts = seconds * 25` and `Ta = seconds * 50` exactly and the
streams cover the same span; then it is resampled to each tokenizer's rate. MuLan embeds the
clip as the mean over its windows (paper: 10 s windows, 1 s hop; `MuLanConfig`).

Codec and w2v-BERT see the clip loudness-normalised, as their raw-audio training tasks did
(musiclm_jax/data/audio_tasks.py); MuLan sees it as it is unless `mulan_loudness_dbfs` is set, because the
synthetic captions it learned from name the loudness.

`TokenizerCheckpoints.fingerprint()` names the checkpoints (directories, steps, hashes of the
k-means and RVQ files) without loading them: the tokenizing tasks store it with every cached
clip, so tokens made by other tokenizers are recognised.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import threading
from typing import Mapping, Optional

import gin
import numpy as np
from etils import epath

from musiclm_jax.core import audio
from musiclm_jax.mulan import mulan_tokenizer
from musiclm_jax.semantic import semantic_tokenizer
from musiclm_jax.stages import token_layout
from musiclm_jax.codec.acoustic_tokenizer import Codec
from musiclm_jax.mulan.mulan_tokenizer import MuLanEmbedder, MuLanQuantizer, MuLanTokenizer
from musiclm_jax.semantic.semantic_tokenizer import SemanticTokenizer

# What the raw-audio tasks normalise to (musiclm_jax/data/audio_tasks.py TARGET_DBFS).
TARGET_DBFS = -20.0


# epath: checkpoints may live on GCS (gs://...) as well as on local disk.
def _absolute(path) -> str:
  path = os.fspath(path)
  return path if "://" in path else os.path.abspath(path)


def _newest_step(checkpoint_root: str, what: str) -> int:
  root = epath.Path(checkpoint_root)
  if not root.is_dir():
    raise FileNotFoundError(f"no {what} checkpoints in {checkpoint_root}")
  steps = sorted(int(d.name) for d in root.iterdir() if d.name.isdigit())
  if not steps:
    raise FileNotFoundError(f"no {what} checkpoint step under {checkpoint_root}")
  return steps[-1]


def _file_digest(path: str) -> str:
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"tokenizer file not found: {path}")
  return hashlib.sha256(epath.Path(path).read_bytes()).hexdigest()[:12]


@gin.configurable(module="music_tokenizers")
@dataclasses.dataclass(frozen=True)
class TokenizerCheckpoints:
  """Where the frozen tokenizers live. Steps None mean the newest; files None mean the default
  names next to the checkpoints (`semantic_kmeans.npz`, `mulan_rvq.npz`)."""

  soundstream_dir: Optional[str] = None
  w2v_bert_dir: Optional[str] = None
  mulan_dir: Optional[str] = None
  soundstream_step: Optional[int] = None
  w2v_bert_step: Optional[int] = None
  mulan_step: Optional[int] = None
  kmeans_file: Optional[str] = None
  mulan_rvq_file: Optional[str] = None

  @property
  def is_configured(self) -> bool:
    return bool(self.soundstream_dir or self.w2v_bert_dir or self.mulan_dir)

  def check(self) -> "TokenizerCheckpoints":
    missing = [name for name in ("soundstream_dir", "w2v_bert_dir", "mulan_dir")
               if not getattr(self, name)]
    if missing:
      raise ValueError(f"TokenizerCheckpoints needs {', '.join(missing)} (gin: "
                       f"music_tokenizers.TokenizerCheckpoints.<name>, or the SOUNDSTREAM_DIR / "
                       f"W2V_BERT_DIR / MULAN_DIR macros of musiclm_jax/gin/tasks/*_tokens.gin)")
    return self

  def resolved(self) -> "TokenizerCheckpoints":
    """Absolute directories, explicit steps and files: what a fingerprint names."""
    self.check()
    dirs = {name: _absolute(getattr(self, name))
            for name in ("soundstream_dir", "w2v_bert_dir", "mulan_dir")}
    steps = {}
    for model, what in (("soundstream", "SoundStream"), ("w2v_bert", "w2v-BERT"),
                        ("mulan", "MuLan")):
      step = getattr(self, f"{model}_step")
      root = os.path.join(dirs[f"{model}_dir"], "checkpoints")
      if step is None:
        step = _newest_step(root, what)
      elif not epath.Path(root, str(step)).is_dir():
        raise FileNotFoundError(f"no {what} checkpoint step {step} under {root}")
      steps[f"{model}_step"] = int(step)
    files = {"kmeans_file": _absolute(
                 self.kmeans_file or semantic_tokenizer.centroids_path(dirs["w2v_bert_dir"])),
             "mulan_rvq_file": _absolute(
                 self.mulan_rvq_file or mulan_tokenizer.rvq_path(dirs["mulan_dir"]))}
    return TokenizerCheckpoints(**dirs, **steps, **files)

  def fingerprint(self) -> str:
    """One line that names these tokenizers: directories, steps and file hashes."""
    r = self.resolved()
    return (f"soundstream={r.soundstream_dir}@{r.soundstream_step} "
            f"w2v_bert={r.w2v_bert_dir}@{r.w2v_bert_step} "
            f"kmeans={_file_digest(r.kmeans_file)} "
            f"mulan={r.mulan_dir}@{r.mulan_step} "
            f"mulan_rvq={_file_digest(r.mulan_rvq_file)}")


class MusicTokenizers:
  """SoundStream + w2v-BERT/k-means + MuLan/RVQ, frozen, checked against one token layout."""

  def __init__(self, codec: Codec, semantic: SemanticTokenizer, mulan: MuLanTokenizer,
               layout: token_layout.TokenLayout, fingerprint: str = "",
               loudness_dbfs: Optional[float] = TARGET_DBFS,
               mulan_loudness_dbfs: Optional[float] = None):
    self.codec, self.semantic, self.mulan, self.layout = codec, semantic, mulan, layout
    self.fingerprint = fingerprint
    self.loudness_dbfs, self.mulan_loudness_dbfs = loudness_dbfs, mulan_loudness_dbfs
    self._check_layout()
    rates = [layout.frame_rate(s) for s in token_layout.TIMED_STREAMS]
    self.step_rate = math.gcd(*rates)  # steps per second of the common frame grid

  def _check_layout(self) -> None:
    layout, problems = self.layout, []
    if self.codec.config.layout != layout:
      problems.append(f"the codec's layout is {self.codec.config.layout}")
    if (self.semantic.sample_rate, self.semantic.hop) != (layout.semantic_sample_rate,
                                                          layout.semantic_hop):
      problems.append(f"w2v-BERT runs at {self.semantic.sample_rate} Hz with hop "
                      f"{self.semantic.hop}, the layout at {layout.semantic_sample_rate} Hz / "
                      f"{layout.semantic_hop}")
    if self.semantic.centroids.num_clusters > layout.semantic_codebook_size:
      problems.append(f"the k-means has {self.semantic.centroids.num_clusters} clusters, more "
                      f"than the layout's {layout.semantic_codebook_size} semantic codes")
    quantizer = self.mulan.quantizer
    if (quantizer.num_levels, quantizer.codebook_size) != (layout.mulan_levels,
                                                           layout.mulan_codebook_size):
      problems.append(f"the MuLan RVQ is {quantizer.num_levels} x {quantizer.codebook_size}, "
                      f"the layout's {layout.mulan_levels} x {layout.mulan_codebook_size}")
    if problems:
      raise ValueError("the tokenizers do not fit the token layout: " + "; ".join(problems))

  @classmethod
  def from_checkpoints(cls, checkpoints: TokenizerCheckpoints, *, layout: token_layout.TokenLayout,
                       soundstream_config, w2v_bert_model, mulan_model,
                       **kwargs) -> "MusicTokenizers":
    """Restores the three tokenizers (parameters only) onto the first device."""
    r = checkpoints.resolved()
    codec = Codec.from_checkpoint(r.soundstream_dir, soundstream_config, r.soundstream_step)
    semantic = SemanticTokenizer.from_model_dir(r.w2v_bert_dir, w2v_bert_model,
                                                centroids_file=r.kmeans_file,
                                                step=r.w2v_bert_step)
    quantizer = MuLanQuantizer.load(r.mulan_rvq_file)
    mulan = MuLanTokenizer(MuLanEmbedder.from_model_dir(r.mulan_dir, mulan_model, r.mulan_step),
                           quantizer)
    return cls(codec, semantic, mulan, layout, fingerprint=r.fingerprint(), **kwargs)

  @property
  def mulan_sample_rate(self) -> int:
    return self.mulan.embedder.model.config.sample_rate

  def num_steps(self, num_samples: int, sample_rate: int) -> int:
    """Whole steps of the common frame grid in a clip (the tail is cut)."""
    return num_samples * self.step_rate // sample_rate

  def seconds(self, num_samples: int, sample_rate: int) -> float:
    """The span the streams of a clip cover."""
    return self.num_steps(num_samples, sample_rate) / self.step_rate

  def tokenize(self, wav, sample_rate: int) -> dict[str, np.ndarray]:
    """float `[samples]` (or `[channels, samples]`, down-mixed) at `sample_rate` ->
    `{"mulan": int32 [Lm], "semantic": int32 [Ts], "acoustic": int32 [Ta, Q]}` codes.

    Raises ValueError for empty, non-finite or sub-step (< 40 ms) audio and odd shapes.
    """
    wav = _mono(wav)
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
      raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if not np.all(np.isfinite(wav)):
      raise ValueError(f"audio has {int(np.sum(~np.isfinite(wav)))} NaN/Inf samples")
    steps = self.num_steps(wav.shape[0], sample_rate)
    if steps == 0:
      raise ValueError(f"audio of {wav.shape[0]} samples at {sample_rate} Hz is shorter than "
                       f"one {1000 // self.step_rate} ms frame step")
    seconds = steps / self.step_rate
    wav = wav[:int(round(seconds * sample_rate))]
    layout = self.layout
    level = wav if self.loudness_dbfs is None else audio.loudness_normalize(
        wav, self.loudness_dbfs)
    semantic_wav = _fit(audio.resample(level, sample_rate, layout.semantic_sample_rate),
                        layout.frames("semantic", seconds) * layout.semantic_hop)
    acoustic_wav = _fit(audio.resample(level, sample_rate, layout.acoustic_sample_rate),
                        layout.frames("acoustic", seconds) * layout.acoustic_hop)
    mulan_in = wav if self.mulan_loudness_dbfs is None else audio.loudness_normalize(
        wav, self.mulan_loudness_dbfs)
    mulan_wav = _fit(audio.resample(mulan_in, sample_rate, self.mulan_sample_rate),
                     int(round(seconds * self.mulan_sample_rate)))
    streams = {
        "mulan": np.asarray(self.mulan.audio_to_tokens(mulan_wav[None]))[0],
        "semantic": np.asarray(self.semantic.tokenize(semantic_wav[None]))[0],
        "acoustic": np.asarray(self.codec.encode(acoustic_wav[None]))[0],
    }
    expected = {"mulan": (layout.mulan_levels,),
                "semantic": (layout.frames("semantic", seconds),),
                "acoustic": (layout.frames("acoustic", seconds), layout.acoustic_levels)}
    for name, shape in expected.items():
      if streams[name].shape != shape:  # a tokenizer whose rate differs from the layout's
        raise ValueError(f"{name} tokens of shape {streams[name].shape} for {seconds} s; the "
                         f"layout wants {shape}")
    return {name: codes.astype(np.int32) for name, codes in streams.items()}


def _mono(wav) -> np.ndarray:
  wav = np.asarray(wav)
  if not np.issubdtype(wav.dtype, np.floating):
    raise ValueError(f"tokenize takes float samples in [-1, 1], got dtype {wav.dtype}")
  if wav.ndim == 2 and wav.shape[0] <= 8 < wav.shape[1]:
    wav = wav.mean(axis=0)  # [channels, samples], as audio.load_audio(mono=False) gives
  if wav.ndim != 1:
    raise ValueError(f"tokenize takes one clip, [samples] or [channels, samples] (at most 8 "
                     f"channels), got shape {wav.shape}")
  if wav.shape[0] == 0:
    raise ValueError("tokenize got an empty clip (0 samples)")
  return wav.astype(np.float32)


def _fit(wav: np.ndarray, num_samples: int) -> np.ndarray:
  """`wav` cut or zero-padded to exactly `num_samples` (resamplers round lengths)."""
  wav = wav[:num_samples]
  return np.pad(wav, (0, num_samples - wav.shape[0])).astype(np.float32)


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


@gin.configurable(module="music_tokenizers")
@dataclasses.dataclass(frozen=True)
class TokenizerModels:
  """The networks the checkpoints hold: built by gin from musiclm_jax/gin/models/*/<size>.gin."""

  layout: token_layout.TokenLayout
  soundstream_config: object   # soundstream.SoundStreamConfig
  w2v_bert_model: object       # w2v_bert.W2vBertModel
  mulan_model: object          # mulan.MuLanModel


@gin.configurable(module="music_tokenizers")
def load_music_tokenizers(checkpoints: Optional[TokenizerCheckpoints] = None,
                          models: Optional[TokenizerModels] = None, *,
                          loudness_dbfs: Optional[float] = TARGET_DBFS,
                          mulan_loudness_dbfs: Optional[float] = None) -> MusicTokenizers:
  """The gin-configured bundle (musiclm_jax/gin/tasks/*_tokens.gin), loaded once per process and
  configuration. checkpoints and models default to what gin binds."""
  checkpoints = (checkpoints or TokenizerCheckpoints()).resolved()
  models = models or TokenizerModels()
  key = (checkpoints, models.layout, repr(models.soundstream_config),
         repr(models.w2v_bert_model.config), repr(models.mulan_model.config), loudness_dbfs,
         mulan_loudness_dbfs)
  with _CACHE_LOCK:
    if key not in _CACHE:
      _CACHE[key] = MusicTokenizers.from_checkpoints(
          checkpoints, layout=models.layout, soundstream_config=models.soundstream_config,
          w2v_bert_model=models.w2v_bert_model, mulan_model=models.mulan_model,
          loudness_dbfs=loudness_dbfs, mulan_loudness_dbfs=mulan_loudness_dbfs)
    return _CACHE[key]


def configured_fingerprint() -> Optional[str]:
  """The fingerprint of the gin-bound checkpoints, or None when none are bound."""
  checkpoints = TokenizerCheckpoints()
  return checkpoints.fingerprint() if checkpoints.is_configured else None


def stream_shapes(layout: token_layout.TokenLayout) -> Mapping[str, tuple]:
  """Static shapes of `tokenize`'s output (None: frames, which depend on the clip)."""
  return {"mulan": (layout.mulan_levels,), "semantic": (None,),
          "acoustic": (None, layout.acoustic_levels)}
