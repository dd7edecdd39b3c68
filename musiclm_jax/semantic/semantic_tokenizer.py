"""Semantic tokens: 16 kHz audio -> w2v-BERT MLM-layer features -> k-means ids at 25 Hz.

  tokenizer = SemanticTokenizer.from_model_dir("/models/w2v_bert", model)
  ids = tokenizer.tokenize(wav16k)            # float [batch, samples] -> int32 [batch, T25]

Length rule: T25 = ceil(samples / 640). The wav is zero-padded at the end to a multiple of
640 samples (40 ms), so every input length works and the last token covers the padded tail.

The model comes from the trainer's orbax checkpoints (`{model_dir}/checkpoints/<step>/state`,
parameters only) and the centroids from `fit_kmeans` (below; the `musiclm_jax.fit_kmeans`
command), whose file (default `{model_dir}/semantic_kmeans.npz`) also fixes the feature layer
and the normalisation.
"""
import math
import os
import time
from typing import Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from musiclm_jax.core import checkpoints, input_pipeline, partitioning, trainer
from musiclm_jax.semantic import kmeans
from musiclm_jax.stages import token_layout
from musiclm_jax.semantic.w2v_bert import W2vBertModel

CENTROIDS_FILENAME = "semantic_kmeans.npz"


def centroids_path(model_dir) -> str:
  """Where `fit_kmeans` writes the centroids by default: next to the model's checkpoints."""
  return os.path.join(os.fspath(model_dir), CENTROIDS_FILENAME)


def param_shardings(model: W2vBertModel, mesh, rules):
  """(abstract params `ShapeDtypeStruct`s, NamedShardings) from the logical annotations."""
  boxed = jax.eval_shape(
      lambda: model.get_initial_variables(jax.random.key(0), {"audio": (1, model.config.hop)}))
  boxed = boxed["params"]
  # Plain unboxing: nn.meta.unbox would add sharding constraints, which need a traced value.
  shapes = jax.tree.map(lambda x: x.unbox(apply_constraint=False), boxed,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
  return shapes, partitioning.logical_to_shardings(mesh, boxed, rules)


def restore_params(model: W2vBertModel, model_dir, *, step: Optional[int] = None, mesh=None,
                   rules=None):
  """The `params` of the newest (or `step`) trainer checkpoint under `model_dir`, laid out on
  `mesh` (default: one device). The optimizer state is not read."""
  directory = epath.Path(model_dir) / "checkpoints"
  if not directory.exists():
    raise FileNotFoundError(f"no w2v-BERT checkpoints in {directory} (train one with "
                            "`python -m musiclm_jax.train --gin_file=models/w2v_bert/...`)")
  manager = checkpoints.create_manager(directory)
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None or not (directory / str(step) / "state").exists():
    raise FileNotFoundError(f"no complete w2v-BERT checkpoint{'' if step is None else f' {step}'}"
                            f" in {directory}")
  mesh = mesh if mesh is not None else partitioning.create_mesh((1, 1, 1), jax.devices()[:1])
  rules = rules if rules is not None else partitioning.logical_axis_rules()
  shapes, shardings = param_shardings(model, mesh, rules)
  abstract = checkpoints.abstract_with_shardings(shapes, shardings)
  restored = ocp.PyTreeCheckpointer().restore(
      directory / str(step) / "state",
      args=ocp.args.PyTreeRestore(
          item={"params": abstract},
          restore_args={"params": ocp.checkpoint_utils.construct_restore_args(abstract)},
          partial_restore=True))
  return restored["params"]


def check_wav(wav) -> np.ndarray:
  """Host-side validation: float `[batch, samples]`, finite, non-empty."""
  wav = np.asarray(wav)
  if wav.ndim != 2:
    hint = "; add a batch axis: wav[None]" if wav.ndim == 1 else ""
    raise ValueError(f"tokenize takes wav [batch, samples] at 16 kHz, got shape {wav.shape}"
                     f"{hint}")
  if not np.issubdtype(wav.dtype, np.floating):
    raise ValueError(f"tokenize takes float samples in [-1, 1], got dtype {wav.dtype}")
  if wav.shape[1] == 0:
    raise ValueError("tokenize got an empty wav (0 samples)")
  if not np.all(np.isfinite(wav)):
    rows = sorted(set(np.nonzero(~np.isfinite(wav))[0].tolist()))
    raise ValueError(f"wav has NaN/Inf samples in batch rows {rows[:10]}")
  return wav.astype(np.float32)


class SemanticTokenizer:
  """Frozen w2v-BERT + k-means: `tokenize(wav16k [batch, samples]) -> int32 [batch, T25]`."""

  def __init__(self, model: W2vBertModel, params, centroids: kmeans.SemanticKMeans):
    self.model = model
    self.params = params
    self.centroids = centroids
    self.layer = centroids.layer
    width = model.config.emb_dim
    if centroids.centroids.shape[1] != width:
      raise ValueError(f"centroids have dimension {centroids.centroids.shape[1]}, but this "
                       f"w2v-BERT's features have {width}")
    stats = (jnp.asarray(centroids.centroids), jnp.asarray(centroids.mean),
             jnp.asarray(centroids.std))
    layer = self.layer

    def tokens(params, stats, wav):
      return kmeans.tokens(model.features(params, wav, layer), *stats)

    self._stats = stats
    self._tokens = jax.jit(tokens)  # one compilation per padded length

  @classmethod
  def from_model_dir(cls, model_dir, model: W2vBertModel,
                     centroids_file: Optional[str] = None, step: Optional[int] = None):
    path = centroids_file or centroids_path(model_dir)
    centroids = kmeans.SemanticKMeans.load(path)  # before the (slower) model restore
    return cls(model, restore_params(model, model_dir, step=step), centroids)

  @property
  def sample_rate(self) -> int:
    return self.model.config.sample_rate

  @property
  def hop(self) -> int:
    return self.model.config.hop

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop

  def num_tokens(self, num_samples: int) -> int:
    return math.ceil(num_samples / self.hop)

  def tokenize(self, wav16k) -> np.ndarray:
    """float `[batch, samples]` at 16 kHz -> int32 `[batch, ceil(samples / 640)]` ids."""
    wav = check_wav(wav16k)
    frames = self.num_tokens(wav.shape[1])
    wav = np.pad(wav, ((0, 0), (0, frames * self.hop - wav.shape[1])))
    return np.asarray(self._tokens(self.params, self._stats, wav))


# --- fitting the k-means (the `fit_kmeans` command) ------------------------------------------

@gin.configurable(module="semantic_tokenizer")
def semantic_codebook_size(layout: token_layout.TokenLayout = token_layout.PAPER) -> int:
  """For gin: the number of clusters is the token layout's semantic codebook, never retyped."""
  return layout.semantic_codebook_size


class _Progress:
  """Logs step, steps/s and ETA of one phase every `every` steps."""

  def __init__(self, phase: str, total: int, every: int):
    self.phase, self.total, self.every = phase, total, max(every, 1)
    self.start = time.perf_counter()

  def __call__(self, done: int, **scalars) -> None:
    if done % self.every and done != self.total:
      return
    elapsed = time.perf_counter() - self.start
    rate = done / max(elapsed, 1e-9)
    eta = (self.total - done) / max(rate, 1e-9)
    extra = "".join(f", {k} {v:.4g}" for k, v in scalars.items())
    logging.info("%s: %d/%d, %.2f steps/s, ETA %.0f s%s", self.phase, done, self.total, rate,
                 eta, extra)


@gin.configurable(module="semantic_tokenizer")
def fit_kmeans(*, model: W2vBertModel, model_dir: str, dataset_cfg: trainer.DatasetConfig,
               layer: int, num_clusters: int, num_steps: int = 1000,
               statistics_batches: int = 50, init_batches: int = 8, num_inits: int = 3,
               checkpoint_step: Optional[int] = None, output_path: Optional[str] = None,
               log_every: int = 10, seed: int = 0) -> str:
  """Fits the semantic k-means on MLM-layer `layer` features of the checkpoint in `model_dir`
  and writes the centroid file (default `{model_dir}/semantic_kmeans.npz`); returns its path.

  1. per-dimension mean / std over `statistics_batches` batches (AudioLM §III);
  2. the best of `num_inits` greedy k-means++ seedings on `init_batches` normalised batches;
  3. `num_steps` mini-batch updates, each on one fresh batch, logging inertia and steps/s.
  Features and k-means are sharded over the batch axes of the gin-configured mesh.
  """
  for name, value in (("num_clusters", num_clusters), ("num_steps", num_steps),
                      ("statistics_batches", statistics_batches),
                      ("init_batches", init_batches), ("num_inits", num_inits)):
    if not isinstance(value, int) or value <= 0:
      raise ValueError(f"fit_kmeans.{name} must be a positive integer, got {value!r}")
  if not 1 <= layer <= model.config.num_mlm_layers:
    raise ValueError(f"fit_kmeans.layer={layer}, but the w2v-BERT has MLM layers "
                     f"1..{model.config.num_mlm_layers}")
  output_path = output_path or centroids_path(model_dir)
  mesh = partitioning.create_mesh()
  rules = partitioning.logical_axis_rules()
  logging.info("Mesh %s", partitioning.describe(mesh))

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params = restore_params(model, model_dir, step=checkpoint_step, mesh=mesh, rules=rules)
    _, shardings = param_shardings(model, mesh, rules)
    iterator = input_pipeline.DatasetIterator(
        trainer.make_dataset(dataset_cfg, model.FEATURE_CONVERTER_CLS))
    batch_shardings = input_pipeline.batch_shardings(mesh, trainer.global_input_shapes(iterator))
    clusterer = kmeans.MiniBatchKMeans(num_clusters, mesh)

    def points_fn(params, wav):
      features = model.features(params, wav, layer)
      return features.reshape(-1, features.shape[-1])  # [batch * frames, dim]

    points_fn = jax.jit(points_fn, in_shardings=(shardings, batch_shardings["audio"]),
                        out_shardings=clusterer.points_sharding)
    normalize = jax.jit(kmeans.normalize, out_shardings=clusterer.points_sharding)

    def next_points():
      batch = input_pipeline.to_global_batch(next(iterator), batch_shardings)
      return points_fn(params, batch["audio"])

    statistics = kmeans.FeatureStatistics()
    progress = _Progress("statistics", statistics_batches, log_every)
    for i in range(statistics_batches):
      statistics.update(next_points())
      progress(i + 1)
    mean, std = jnp.asarray(statistics.mean), jnp.asarray(statistics.std)
    logging.info("Normalisation statistics over %d frames of layer %d", statistics.count, layer)

    seed_points = jnp.concatenate(
        [normalize(next_points(), mean, std) for _ in range(init_batches)], axis=0)
    if seed_points.shape[0] < num_clusters:
      raise ValueError(f"k-means++ needs {num_clusters} points but {init_batches} init batches "
                       f"hold {seed_points.shape[0]} frames; raise fit_kmeans.init_batches")
    centroids, counts = clusterer.init(jax.random.key(seed), seed_points, num_inits)

    progress = _Progress("k-means", num_steps, log_every)
    for i in range(num_steps):
      centroids, counts, inertia = clusterer.step(centroids, counts,
                                                  normalize(next_points(), mean, std))
      if (i + 1) % progress.every == 0 or i + 1 == num_steps:
        progress(i + 1, inertia=float(inertia))

  result = kmeans.SemanticKMeans(
      centroids=jax.device_get(centroids), mean=statistics.mean, std=statistics.std,
      counts=jax.device_get(counts), layer=layer)
  result.save(output_path)
  used = int((result.counts > 0).sum())
  logging.info("Wrote %s: %d clusters (%d used), dim %d, layer %d", output_path,
               result.num_clusters, used, result.centroids.shape[1], layer)
  return output_path
