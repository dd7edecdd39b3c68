"""SeqIO task -> batched, per-process sharded, checkpointable input iterator.

The trainer must resume bit-identically after a crash, so the position of the
data iterator is saved with every checkpoint. We rely on tf.data's own iterator
checkpointing (`tf.train.Checkpoint(iterator=...)`), which serialises the whole
pipeline state: file/shard cursors, shuffle buffers and RNG state, partially
filled batches and the elements sitting in `prefetch` buffers. Because of that,
tf.data's internal prefetching is safe; what is NOT safe is any Python-side
read-ahead (a thread pulling batches into a queue), since those elements would
be neither in the checkpoint nor consumed. `DatasetIterator` therefore reads
exactly one batch per `__next__`.

Layout per process (P = number of data shards, normally `jax.process_count()`):
  get_dataset(batch_size=B)  ->  tf.data.Dataset of {feature: [B // P, ...]}
  to_global_batch(...)       ->  {feature: jax.Array [B, ...]} sharded over the
                                 mesh's batch axes.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Mapping, Sequence

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from musiclm_jax.core import partitioning

# JAX owns the accelerators: if TF initialised a GPU/TPU it would reserve its
# memory. This must run before TF touches any device; if something already did
# (RuntimeError), it is too late to change and we only log it.
for _device_type in ("GPU", "TPU"):
  try:
    tf.config.set_visible_devices([], _device_type)
  except (RuntimeError, ValueError) as _e:  # pragma: no cover - environment dependent
    logging.warning("Could not hide %s devices from TensorFlow: %s", _device_type, _e)

# How many registered names to show when a task is not found.
_NUM_NAMES_IN_ERROR = 8


def _deterministic_options() -> tf.data.Options:
  """tf.data options that make element order reproducible and checkpointable."""
  options = tf.data.Options()
  # Parallel map/interleave must return elements in input order, otherwise a
  # restored run would see a different order than the uninterrupted one.
  options.deterministic = True
  # Refuse to checkpoint a pipeline with state TF cannot serialise (e.g.
  # `from_generator`, stateful random ops): silently ignoring it (WARN/IGNORE)
  # would break bit-identical resume without anyone noticing.
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.FAIL
  return options


def _check_registered(name: str) -> None:
  """Raises a ValueError naming `name` and some registered tasks/mixtures."""
  tasks = set(seqio.TaskRegistry.names())
  mixtures = set(seqio.MixtureRegistry.names())
  if name in tasks or name in mixtures:
    return
  known = sorted(tasks | mixtures)
  close = difflib.get_close_matches(name, known, n=_NUM_NAMES_IN_ERROR, cutoff=0.3)
  shown = close + [n for n in known if n not in close]
  shown = shown[:_NUM_NAMES_IN_ERROR]
  more = f" (and {len(known) - len(shown)} more)" if len(known) > len(shown) else ""
  raise ValueError(
      f"SeqIO task or mixture {name!r} is not registered. Registered: "
      f"{', '.join(shown) or '<none>'}{more}. Did you import the module that "
      "registers it (e.g. `import musiclm_jax.data.audio_tasks`, or an `import` line in a "
      "gin file)?")


@gin.configurable
def get_dataset(
    mixture_or_task_name: str,
    task_feature_lengths: Mapping[str, int],
    split: str,
    batch_size: int,
    feature_converter_cls,
    shuffle: bool = True,
    seed: int | None = 0,
    num_epochs: int | None = None,
    use_cached: bool = False,
    pack: bool = False,
    shard_info: seqio.ShardInfo | None = None,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
  """Builds this process's shard of a seqio task, converted and batched.

  Args:
    mixture_or_task_name: a registered seqio Task or Mixture.
    task_feature_lengths: e.g. {"inputs": 12, "targets": 750}.
    split: dataset split, e.g. "train".
    batch_size: GLOBAL batch size; each of the `shard_info.num_shards` data
      shards yields batches of `batch_size // num_shards`.
    feature_converter_cls: a seqio FeatureConverter class, instantiated here as
      `feature_converter_cls(pack=pack)`.
    shuffle: shuffle examples (seqio's per-task shuffle buffer).
    seed: shuffle / preprocessing seed; None is non-deterministic (a restored
      iterator still resumes exactly, the RNG state is in the checkpoint).
    num_epochs: passes over the data; None repeats forever (training).
    use_cached: read the seqio cache (cache_tasks_main output).
    pack: let the feature converter pack several examples per row.
    shard_info: which data shard this process reads; defaults to
      ShardInfo(jax.process_index(), jax.process_count()).
    drop_remainder: drop a final partial batch so every batch has a static
      shape (needed by jit); set False for exhaustive evaluation.

  Returns:
    tf.data.Dataset of {feature: [batch_size // num_shards, length]}.
  """
  if shard_info is None:
    shard_info = seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count())
  if batch_size <= 0 or batch_size % shard_info.num_shards:
    raise ValueError(
        f"batch_size={batch_size} must be a positive multiple of the number of "
        f"data shards (processes) {shard_info.num_shards}: each process reads "
        "batch_size // num_shards examples per step.")
  _check_registered(mixture_or_task_name)
  per_process_batch = batch_size // shard_info.num_shards

  ds = seqio.get_dataset(
      mixture_or_task_name,
      task_feature_lengths=task_feature_lengths,
      feature_converter=feature_converter_cls(pack=pack),
      dataset_split=split,
      use_cached=use_cached,
      shuffle=shuffle,
      num_epochs=num_epochs,
      shard_info=shard_info,
      seed=seed,
  )
  ds = ds.batch(per_process_batch, drop_remainder=drop_remainder)
  # Overlap host input with the device step; the buffered batches are part of
  # the tf.data checkpoint, so this does not break exact resume.
  ds = ds.prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_deterministic_options())


class DatasetIterator:
  """Process-local iterator over numpy batches whose position can be saved/restored.

  Batches are {feature: np.ndarray [local_batch, ...]}. `save`/`restore`
  write/read this process's tf.data iterator state under a path prefix (TF
  appends `.index` / `.data-*`); the prefix may be local or gs://.
  """

  def __init__(self, dataset: tf.data.Dataset):
    self._dataset = dataset.with_options(_deterministic_options())
    self._iterator = iter(self._dataset)
    # One Checkpoint object reused for every save/restore: it only tracks the
    # iterator resource, so writes are cheap to set up.
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

  def __iter__(self) -> "DatasetIterator":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    # Exactly one element is pulled from tf.data per call (no read-ahead here).
    batch = next(self._iterator)
    return jax.tree.map(lambda t: t.numpy(), batch)

  @property
  def element_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{feature: (shape, numpy dtype)} of one process-local batch."""

    def to_pair(spec: tf.TensorSpec):
      if not spec.shape.is_fully_defined():
        raise ValueError(
            f"Batch feature has non-static shape {spec.shape}; use "
            "drop_remainder=True and fixed task_feature_lengths.")
      return tuple(spec.shape.as_list()), np.dtype(spec.dtype.as_numpy_dtype)

    return jax.tree.map(
        to_pair, self._dataset.element_spec,
        is_leaf=lambda x: isinstance(x, tf.TensorSpec))

  def save(self, path_prefix: str | os.PathLike) -> None:
    """Writes the iterator state to `path_prefix` (+ TF's suffixes), synchronously."""
    path_prefix = os.fspath(path_prefix)
    parent = os.path.dirname(path_prefix)
    if parent:
      tf.io.gfile.makedirs(parent)
    try:
      self._checkpoint.write(path_prefix)
    except tf.errors.FailedPreconditionError as e:
      # The FAIL external-state policy lands here; TF's message ("PyFunc is
      # stateful") does not say what to change.
      raise ValueError(
          f"Cannot checkpoint the input pipeline to {path_prefix!r}: it holds "
          f"state tf.data cannot serialise ({e.message}). Avoid "
          "Dataset.from_generator, tf.py_function and stateful random ops; use "
          "seeded stateless ops (seqio.map_over_dataset(num_seeds=...)).") from e

  def restore(self, path_prefix: str | os.PathLike) -> None:
    """Sets the iterator to the saved position; `__next__` continues from there."""
    path_prefix = os.fspath(path_prefix)
    if not tf.io.gfile.exists(path_prefix + ".index"):
      raise FileNotFoundError(
          f"No data-iterator checkpoint at {path_prefix!r} (expected "
          f"{path_prefix}.index). Was it saved with a different number of "
          "processes?")
    # assert_consumed: the saved state must match this pipeline's iterator,
    # otherwise we would silently start from the beginning.
    self._checkpoint.read(path_prefix).assert_consumed()


def to_global_batch(
    local_batch: Mapping[str, np.ndarray],
    shardings: Mapping[str, jax.sharding.Sharding],
) -> dict[str, jax.Array]:
  """Assembles global jax.Arrays from each process's local batch.

  Args:
    local_batch: {feature: np.ndarray [local_batch, ...]} from DatasetIterator.
    shardings: {feature: Sharding} e.g. from `batch_shardings`.

  Returns:
    {feature: jax.Array [local_batch * num_data_processes, ...]}.
  """
  missing = set(local_batch) - set(shardings)
  if missing:
    raise KeyError(f"No sharding given for batch feature(s) {sorted(missing)}.")
  return {
      name: jax.make_array_from_process_local_data(shardings[name], array)
      for name, array in local_batch.items()
  }


def batch_shardings(
    mesh: jax.sharding.Mesh,
    element_spec: Mapping[str, Any],
    batch_axes: Sequence[str] = partitioning.BATCH_AXES,
) -> dict[str, jax.sharding.NamedSharding]:
  """Shards dim 0 of every feature over the mesh axes in `batch_axes`.

  Args:
    mesh: device mesh, e.g. axes ("data", "fsdp", "model").
    element_spec: {feature: (shape, dtype)} (DatasetIterator.element_spec) or
      {feature: object with .shape} (e.g. jax.ShapeDtypeStruct).
    batch_axes: mesh axes the batch is split over; axes missing from the mesh
      are skipped, so the same call works on any mesh.

  Returns:
    {feature: NamedSharding(mesh, P(batch_axes, None, ...))}.
  """
  axes = tuple(a for a in batch_axes if a in mesh.axis_names)
  batch_spec = None if not axes else (axes[0] if len(axes) == 1 else axes)

  def rank(spec) -> int:
    shape = spec.shape if hasattr(spec, "shape") else spec[0]
    return len(shape)

  return {
      name: jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(batch_spec, *([None] * (rank(spec) - 1))))
      for name, spec in element_spec.items()
  }
