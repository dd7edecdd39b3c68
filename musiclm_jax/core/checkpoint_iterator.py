"""Orbax handler that stores the data-iterator position inside a checkpoint step.

Usage (next to the train state, in one atomic orbax step):

  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), dataset=DatasetIteratorSave(it)))
  manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      dataset=DatasetIteratorRestore(it)))

How orbax 0.12.8 drives this (see composite_checkpoint_handler.py and
async_checkpointer.py): `CheckpointManager.save` calls
`CompositeCheckpointHandler.async_save` in the caller's thread. For a handler
that is not an `AsyncCheckpointHandler` (this one) it runs `save()` in a worker
thread and blocks on it, after the step's temporary directory exists, so the
iterator state is captured before `manager.save` returns even when the array
items finish asynchronously. The files land in the step's temporary directory
which orbax renames (or marks committed, on GCS) only after every item of every
process is written, so a step with train state but no iterator state is never
visible.

Each process writes its own state: `<step>/dataset/process_{i}-of-{n}.index`
(+ `.data-*`). Restoring therefore needs the same number of processes.
"""

from __future__ import annotations

import dataclasses

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from musiclm_jax.core.input_pipeline import DatasetIterator


def _process_path_prefix(directory: epath.Path) -> epath.Path:
  return directory / f"process_{jax.process_index()}-of-{jax.process_count()}"


class DatasetIteratorCheckpointHandler(ocp.CheckpointHandler):
  """Saves/restores one DatasetIterator per process (synchronous, per-process files)."""

  def save(self, directory: epath.Path, args: "DatasetIteratorSave") -> None:
    # No barrier needed: each process writes a distinct file and orbax syncs
    # all processes before committing the step.
    args.iterator.save(_process_path_prefix(directory))

  def restore(self, directory: epath.Path,
              args: "DatasetIteratorRestore | None" = None) -> DatasetIterator | None:
    if args is None or args.iterator is None:
      # e.g. `manager.restore(step)` with no args (inference wants params only).
      logging.warning("Data-iterator state in %s not restored: no iterator given.", directory)
      return None
    args.iterator.restore(_process_path_prefix(directory))
    return args.iterator

  def metadata(self, directory: epath.Path) -> None:
    return None


@ocp.args.register_with_handler(DatasetIteratorCheckpointHandler, for_save=True)
@dataclasses.dataclass
class DatasetIteratorSave(ocp.args.CheckpointArgs):
  """Save this process's iterator position (captured before `save` returns)."""
  iterator: DatasetIterator


@ocp.args.register_with_handler(DatasetIteratorCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class DatasetIteratorRestore(ocp.args.CheckpointArgs):
  """Restore into `iterator` (mutated in place and returned)."""
  # Optional so orbax can default-construct it for `restore(step)` without args.
  iterator: DatasetIterator | None = None
