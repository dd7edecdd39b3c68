"""MusicLM end to end: text -> MuLan -> semantic -> coarse -> fine -> SoundStream -> waveform.

  music_lm = pipeline.load(...)          # or gin: `@pipeline.load()` (musiclm_jax/gin/pipeline/*.gin)
  out = music_lm.generate(["calm piano", "fast drums"], seconds=10.0, seed=0)
  out.wav                                # float32 [2, 10 s x sample_rate]
  story = music_lm.generate_story([("calm piano", 15.0), ("the drums come in", 15.0)])
  more = music_lm.continue_audio(wav, 16000, seconds=10.0, texts=["with strings"])

The stage models sample in windows of their training crop (`generation.py`): anything longer
than a crop is long generation, story mode changes the MuLan tokens per segment, and a
continuation starts the semantic and coarse streams from the clip's own tokens (AudioLM §4).
Inference conditions on the MuLan *text* embedding quantised by the RVQ fitted on audio
(MusicLM §3.1), or, with a conditioning index, on the tuple of the stages' training codes
nearest to it (`conditioning_index.py`); `num_candidates` > 1 draws that many clips per
prompt and keeps the one whose MuLan audio embedding is closest to the text's (the paper's
MuLan cycle consistency as a reranker). The stages sample on a device mesh (`load`'s
`mesh_shape`), their parameters and KV caches sharded by the logical axis rules; MuLan,
w2v-BERT and the codec stay on one device.
"""
import dataclasses
import math
import time
from typing import Mapping, Optional, Sequence, Union

import gin
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from musiclm_jax.core import audio, checkpoints, partitioning
from musiclm_jax.stages import decoding, generation, token_layout
from musiclm_jax.data import music_tokenizers
from musiclm_jax.evaluation.mulan_cycle import cosine_similarity
from musiclm_jax.inference.conditioning_index import ConditioningIndex
from musiclm_jax.codec.acoustic_tokenizer import Codec
from musiclm_jax.stages.stage_model import DecoderOnlyModel
from musiclm_jax.mulan.mulan import MuLanModel
from musiclm_jax.mulan.mulan_tokenizer import MuLanTokenizer
from musiclm_jax.semantic.semantic_tokenizer import SemanticTokenizer
from musiclm_jax.codec.soundstream import SoundStreamConfig
from musiclm_jax.semantic.w2v_bert import W2vBertModel

STAGES = token_layout.STAGE_NAMES
Texts = Union[str, Sequence[str]]


@dataclasses.dataclass
class Generation:
  """A batch of generated clips and the tokens they were decoded from.

  wav: float32 `[batch, samples]` at `sample_rate`.
  mulan: int32 `[batch, segments, mulan_levels]`, the conditioning of each story segment.
  semantic: int32 `[batch, T25]`; acoustic: int32 `[batch, T50, acoustic_levels]`.
  prompt_frames: semantic frames taken from a continued clip (0 when generating from text).
  scores: MuLan text-audio cosine of each clip (only with `num_candidates` > 1).
  timings: seconds spent per step ("mulan", "semantic", "coarse", "fine", "decode", ...).
  """
  wav: np.ndarray
  sample_rate: int
  mulan: np.ndarray
  semantic: np.ndarray
  acoustic: np.ndarray
  timings: dict
  prompt_frames: int = 0
  scores: Optional[np.ndarray] = None

  @property
  def seconds(self) -> float:
    return self.wav.shape[1] / self.sample_rate

  def token_counts(self) -> dict:
    """Tokens per stream of one clip, as the stage models see them."""
    return {"mulan": int(self.mulan.shape[1] * self.mulan.shape[2]),
            "semantic": int(self.semantic.shape[1]),
            "acoustic": int(self.acoustic.shape[1] * self.acoustic.shape[2])}


class MusicLM:
  """The six trained parts; every method is batched over prompts.

  decoder_params: per stage, e.g. `{"coarse": {"temperature": 0.95, "topk": 0}}`; missing
    stages or keys keep the paper's temperatures (decoding.STAGE_TEMPERATURES).
  crop_seconds / context_seconds: per-stage window and kept context of long generation
    (default: the stage's training crop and half of it).
  mesh / rules: where the stages sample and how their parameters shard (generation.
    StageSampler; default: the first device). MuLan, w2v-BERT and the codec stay on one device.
  conditioning_index: if given, a text's MuLan codes are the index's tuple nearest to its
    embedding (conditioning_index.py) instead of the RVQ's codes of it.
  """

  def __init__(self, *, codec: Codec, mulan: MuLanTokenizer,
               stages: Mapping[str, tuple[DecoderOnlyModel, object]],
               semantic_tokenizer: Optional[SemanticTokenizer] = None,
               decoder_params: Optional[Mapping[str, dict]] = None,
               crop_seconds: Optional[Mapping[str, float]] = None,
               context_seconds: Optional[Mapping[str, float]] = None,
               mesh: Optional[Mesh] = None, rules: Optional[Sequence] = None,
               conditioning_index: Optional[ConditioningIndex] = None):
    missing = [s for s in STAGES if s not in stages]
    if missing:
      raise ValueError(f"MusicLM needs the stage models {list(STAGES)}; missing {missing}")
    self.codec, self.mulan, self.semantic_tokenizer = codec, mulan, semantic_tokenizer
    self.layout = stages["semantic"][0].stage.layout
    for name in STAGES:
      model = stages[name][0]
      if model.stage is None or model.stage.name != name or model.stage.layout != self.layout:
        raise ValueError(f"the {name} stage model must have the {name} vocabulary of one token "
                         f"layout shared by all stages; got {model.stage}")
    self._check_tokenizers()
    self.conditioning_index = conditioning_index
    if conditioning_index is not None:
      conditioning_index.check(self.mulan.quantizer.num_levels, self.mulan.quantizer.codebook_size)
    for key in (decoder_params or {}):
      if key not in STAGES:
        raise ValueError(f"decoder_params has unknown stage {key!r}; expected {list(STAGES)}")
    self.decoder_params = {
        s: {"temperature": decoding.STAGE_TEMPERATURES[s], **(decoder_params or {}).get(s, {})}
        for s in STAGES}
    self.samplers = {s: generation.StageSampler(stages[s][0], stages[s][1], self.decoder_params[s],
                                                mesh, rules)
                     for s in STAGES}
    self.crop_seconds = dict(crop_seconds or {})
    self.context_seconds = dict(context_seconds or {})

  def _check_tokenizers(self) -> None:
    layout, codec = self.layout, self.codec.config
    if (codec.num_levels, codec.codebook_size, codec.sample_rate, codec.hop) != (
        layout.acoustic_levels, layout.acoustic_codebook_size, layout.acoustic_sample_rate,
        layout.acoustic_hop):
      raise ValueError("the SoundStream codec's levels, codebook, rate or hop differ from the "
                       "stages' token layout")
    quantizer = self.mulan.quantizer
    if (quantizer.num_levels, quantizer.codebook_size) != (layout.mulan_levels,
                                                           layout.mulan_codebook_size):
      raise ValueError(f"the MuLan RVQ has {quantizer.num_levels} x {quantizer.codebook_size} "
                       f"codes; the stages read {layout.mulan_levels} x "
                       f"{layout.mulan_codebook_size}")

  @property
  def sample_rate(self) -> int:
    return self.layout.acoustic_sample_rate

  @property
  def mulan_sample_rate(self) -> int:
    return self.mulan.embedder.model.config.sample_rate

  # --- conditioning ----------------------------------------------------------------------------

  def text_tokens(self, texts: Sequence[str]) -> np.ndarray:
    """Captions -> MuLan codes int32 `[batch, mulan_levels]` (text tower + audio-fitted RVQ,
    or the conditioning index's nearest tuple)."""
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
      raise ValueError(f"texts must be non-empty strings, got {texts!r}")
    if self.conditioning_index is not None:
      return self.conditioning_index.nearest(self.mulan.quantizer,
                                             self.mulan.embedder.embed_text(texts))
    return self.mulan.text_to_tokens(texts)

  def mulan_scores(self, wav: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """Cosine of the MuLan audio embedding of each clip `[batch, samples]` (at `sample_rate`)
    with its caption's text embedding: `[batch]`."""
    embeddings = self.mulan.embedder.embed_audio(audio.resample(wav, self.sample_rate,
                                                                self.mulan_sample_rate))
    return cosine_similarity(embeddings, self.mulan.embedder.embed_text(list(texts)))

  def _story_codes(self, story, batch: Optional[int]):
    """[(texts, seconds), ...] -> ([(codes [batch, levels], seconds)], batch)."""
    if not story:
      raise ValueError("a story needs at least one (text, seconds) segment")
    segments = []
    for i, (texts, seconds) in enumerate(story):
      texts = [texts] if isinstance(texts, str) else list(texts)
      if batch is None:
        batch = len(texts)
      if len(texts) == 1:
        texts = texts * batch
      if len(texts) != batch:
        raise ValueError(f"story segment {i} has {len(texts)} texts for a batch of {batch}")
      if not seconds > 0:
        raise ValueError(f"story segment {i} lasts {seconds} s; it must be positive")
      segments.append((texts, float(seconds)))
    return segments, batch

  # --- generation ------------------------------------------------------------------------------

  def _frames(self, seconds: float) -> int:
    """Whole semantic frames (25 Hz) in `seconds`, at least one."""
    return max(1, int(round(seconds * self.layout.frame_rate("semantic"))))

  def _run_stages(self, story_codes, rng, semantic_prompt=None, coarse_prompt=None,
                  fine_prompt=None) -> tuple[np.ndarray, np.ndarray, dict]:
    timings = {}
    layout = self.layout
    crops, contexts = self.crop_seconds, self.context_seconds
    start = time.perf_counter()
    rng_semantic, rng_coarse, rng_fine = jax.random.split(rng, 3)
    semantic = generation.generate_semantic(
        self.samplers["semantic"], layout, story_codes, rng_semantic, prompt=semantic_prompt,
        crop_seconds=crops.get("semantic"), context_seconds=contexts.get("semantic"))
    timings["semantic"] = time.perf_counter() - start
    start = time.perf_counter()
    coarse = generation.generate_coarse(
        self.samplers["coarse"], layout, story_codes, semantic, rng_coarse, prompt=coarse_prompt,
        crop_seconds=crops.get("coarse"), context_seconds=contexts.get("coarse"))
    timings["coarse"] = time.perf_counter() - start
    start = time.perf_counter()
    # Fine chunks read only their own coarse frames, so a continuation re-uses the clip's fine
    # codes and samples the new frames alone.
    done = 0 if fine_prompt is None else fine_prompt.shape[1]
    fine = generation.generate_fine(self.samplers["fine"], layout, coarse[:, done:], rng_fine,
                                    crop_seconds=crops.get("fine"))
    if fine_prompt is not None:
      fine = np.concatenate([fine_prompt, fine], axis=1)
    timings["fine"] = time.perf_counter() - start
    return semantic, generation.acoustic_codes(coarse, fine), timings

  def _decode(self, acoustic: np.ndarray) -> np.ndarray:
    return np.asarray(self.codec.decode(acoustic), np.float32)

  def generate_story(self, story: Sequence[tuple[Texts, float]], seed: int = 0,
                     num_candidates: int = 1) -> Generation:
    """Story mode: `[(texts, seconds), ...]`, where texts is one caption per clip of the batch
    (or one caption for all); the conditioning changes at each segment's start."""
    segments, batch = self._story_codes(story, None)
    return self._generate(segments, batch, jax.random.key(seed), num_candidates)

  def generate(self, texts: Sequence[str], seconds: float, seed: int = 0,
               num_candidates: int = 1) -> Generation:
    """One clip of `seconds` per caption (rounded to whole 40 ms semantic frames)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    return self.generate_story([(texts, seconds)], seed=seed, num_candidates=num_candidates)

  def _generate(self, segments, batch: int, rng, num_candidates: int) -> Generation:
    if num_candidates < 1:
      raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
    start = time.perf_counter()
    # Each caption repeated num_candidates times in a row: candidates of one prompt are
    # neighbours, so picking the best is a reshape.
    story_codes = [(np.repeat(self.text_tokens(texts), num_candidates, axis=0), seconds)
                   for texts, seconds in segments]
    timings = {"mulan": time.perf_counter() - start}
    semantic, acoustic, stage_timings = self._run_stages(story_codes, rng)
    timings.update(stage_timings)
    out = self._finish(story_codes, semantic, acoustic, timings)
    if num_candidates > 1:
      out = self._keep_best(out, segments, batch, num_candidates)
    return out

  def _finish(self, story_codes, semantic, acoustic, timings, prompt_frames=0) -> Generation:
    start = time.perf_counter()
    wav = self._decode(acoustic)
    timings["decode"] = time.perf_counter() - start
    mulan = np.stack([codes for codes, _ in story_codes], axis=1).astype(np.int32)
    return Generation(wav=wav, sample_rate=self.sample_rate, mulan=mulan,
                      semantic=semantic.astype(np.int32), acoustic=acoustic.astype(np.int32),
                      timings=timings, prompt_frames=prompt_frames)

  def _keep_best(self, out: Generation, segments, batch: int, n: int) -> Generation:
    """Scores each candidate against the caption of its longest story segment and keeps the
    best of each prompt's `n`."""
    start = time.perf_counter()
    texts = max(segments, key=lambda segment: segment[1])[0]
    scores = self.mulan_scores(out.wav, [t for t in texts for _ in range(n)]).reshape(batch, n)
    best = np.arange(batch) * n + scores.argmax(axis=1)
    out.timings["rerank"] = time.perf_counter() - start
    return dataclasses.replace(
        out, wav=out.wav[best], mulan=out.mulan[best], semantic=out.semantic[best],
        acoustic=out.acoustic[best], scores=scores.max(axis=1))

  # --- continuation ----------------------------------------------------------------------------

  def tokenize_clip(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """A clip `[batch, samples]` -> (semantic `[batch, T25]`, acoustic `[batch, 2 T25, Q]`),
    cut to whole semantic frames so both streams cover the same span."""
    if self.semantic_tokenizer is None:
      raise ValueError("continuing audio needs the w2v-BERT semantic tokenizer "
                       "(pipeline.load's w2v_bert_dir / w2v_bert_model)")
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 2 or wav.shape[1] == 0:
      raise ValueError(f"the clip to continue must be float [batch, samples], got {wav.shape}")
    frames = int(wav.shape[1] * self.layout.frame_rate("semantic") // sample_rate)
    if frames < 1:
      raise ValueError(f"the clip to continue is shorter than one semantic frame "
                       f"({wav.shape[1]} samples at {sample_rate} Hz)")
    seconds = frames / self.layout.frame_rate("semantic")
    # Each clip at the level the codec and w2v-BERT trained on (and the cached tokens were made
    # at): a quiet clip would otherwise be coded as the near-silence it never saw.
    wav = np.stack([audio.loudness_normalize(row, music_tokenizers.TARGET_DBFS)
                    for row in wav[:, :int(round(seconds * sample_rate))]])
    tokenizer = self.semantic_tokenizer
    semantic = tokenizer.tokenize(audio.resample(wav, sample_rate, tokenizer.sample_rate))
    semantic = semantic[:, :frames]
    acoustic_frames = self.layout.frames("acoustic", seconds)
    acoustic = np.asarray(self.codec.encode(audio.resample(wav, sample_rate, self.sample_rate)))
    return semantic, acoustic[:, :acoustic_frames]

  def continue_audio(self, wav: np.ndarray, sample_rate: int, seconds: float,
                     texts: Optional[Sequence[str]] = None, seed: int = 0) -> Generation:
    """Continues each clip `[batch, samples]` by `seconds`: its semantic and acoustic tokens
    are the prompt of every stage and reappear unchanged at the start of the result. Without
    texts the conditioning is the clip's own MuLan audio tokens."""
    start = time.perf_counter()
    semantic, acoustic = self.tokenize_clip(wav, sample_rate)
    batch = semantic.shape[0]
    if texts is None:
      codes = self.mulan.audio_to_tokens(audio.resample(wav, sample_rate,
                                                        self.mulan_sample_rate))
    else:
      texts = [texts] if isinstance(texts, str) else list(texts)
      codes = self.text_tokens(texts * batch if len(texts) == 1 else texts)
      if codes.shape[0] != batch:
        raise ValueError(f"{codes.shape[0]} texts for {batch} clips to continue")
    timings = {"tokenize": time.perf_counter() - start}
    prompt_seconds = semantic.shape[1] / self.layout.frame_rate("semantic")
    total = prompt_seconds + self._frames(seconds) / self.layout.frame_rate("semantic")
    story_codes = [(codes, total)]
    coarse_levels = self.layout.coarse_levels
    new_semantic, new_acoustic, stage_timings = self._run_stages(
        story_codes, jax.random.key(seed), semantic_prompt=semantic,
        coarse_prompt=acoustic[..., :coarse_levels], fine_prompt=acoustic[..., coarse_levels:])
    timings.update(stage_timings)
    return self._finish(story_codes, new_semantic, new_acoustic, timings,
                        prompt_frames=semantic.shape[1])


# --- loading the six parts -----------------------------------------------------------------------

def stage_mesh(mesh_shape: Sequence[int] = (-1, 1, 1)) -> Mesh:
  """A `(data, fsdp, model)` mesh over this process's devices: all of them when an entry is
  -1, else the first prod(mesh_shape), so (1, 1, 1) runs on one device of a larger host.
  Local devices only: every process of a multi-host job generates its own prompts."""
  devices = jax.local_devices()
  if -1 not in mesh_shape:
    devices = devices[:math.prod(mesh_shape)]
  return partitioning.create_mesh(mesh_shape, devices)


def restore_stage(model: DecoderOnlyModel, model_dir: str, mesh: Mesh, rules: Sequence,
                  step: Optional[int] = None):
  """The parameters of a trained stage (newest or `step`), each read straight into the
  shards the logical rules give it on `mesh`; as `infer` does, the optimizer state is not
  read."""
  return checkpoints.restore_params(model_dir, generation.abstract_params(model, mesh, rules),
                                    step)[0]


@gin.configurable(module="pipeline")
@dataclasses.dataclass(frozen=True)
class Parts:
  """Where the six trained parts live and how each was configured (its model gin file).
  The w2v-BERT (+ its k-means file) is only needed to continue audio clips; the MuLan RVQ and
  k-means files default to the ones next to their model's checkpoints."""
  soundstream_dir: str
  soundstream_config: SoundStreamConfig
  mulan_dir: str
  mulan_model: MuLanModel
  semantic_dir: str
  semantic_model: DecoderOnlyModel
  coarse_dir: str
  coarse_model: DecoderOnlyModel
  fine_dir: str
  fine_model: DecoderOnlyModel
  w2v_bert_dir: Optional[str] = None
  w2v_bert_model: Optional[W2vBertModel] = None
  mulan_rvq_file: Optional[str] = None
  semantic_kmeans_file: Optional[str] = None
  # Stages conditioned only on tuples they trained on (conditioning_index.py); None: the RVQ.
  conditioning_index_file: Optional[str] = None

  def stage(self, name: str) -> tuple[DecoderOnlyModel, str]:
    return getattr(self, f"{name}_model"), getattr(self, f"{name}_dir")


@gin.configurable(module="pipeline")
def load(parts: Parts, decoder_params: Optional[Mapping[str, dict]] = None,
         crop_seconds: Optional[Mapping[str, float]] = None,
         context_seconds: Optional[Mapping[str, float]] = None,
         mesh_shape: Sequence[int] = (-1, 1, 1)) -> MusicLM:
  """MusicLM from the newest checkpoints of its parts (each as its training run wrote it).
  The stages sample on a `mesh_shape` `(data, fsdp, model)` mesh (stage_mesh; default: all
  local devices over data) with the parameters sharded by partitioning.logical_axis_rules."""
  index = (ConditioningIndex.load(parts.conditioning_index_file)  # fails fast
           if parts.conditioning_index_file else None)
  semantic_tokenizer = None
  if parts.w2v_bert_dir:
    if parts.w2v_bert_model is None:
      raise ValueError("pipeline.Parts: w2v_bert_dir is set but w2v_bert_model is not")
    semantic_tokenizer = SemanticTokenizer.from_model_dir(
        parts.w2v_bert_dir, parts.w2v_bert_model, parts.semantic_kmeans_file)
  mulan = MuLanTokenizer.from_model_dir(parts.mulan_dir, parts.mulan_model, parts.mulan_rvq_file)
  codec = Codec.from_checkpoint(parts.soundstream_dir, parts.soundstream_config)
  mesh, rules = stage_mesh(mesh_shape), partitioning.logical_axis_rules()
  logging.info("Stages sample on a mesh %s", partitioning.describe(mesh))
  stages = {}
  for name in STAGES:
    model, model_dir = parts.stage(name)
    stages[name] = (model, restore_stage(model, model_dir, mesh, rules))
  return MusicLM(codec=codec, mulan=mulan, stages=stages, semantic_tokenizer=semantic_tokenizer,
                 decoder_params=decoder_params, crop_seconds=crop_seconds,
                 context_seconds=context_seconds, mesh=mesh, rules=rules,
                 conditioning_index=index)
