"""t5x.infer's output files, written in chunks that survive a kill.

  {output_dir}/{task}-{mode}.jsonl-{process:05}-of-{processes:05}            the result
  {output_dir}/{task}-{mode}.jsonl-{process:05}-of-{processes:05}.COMPLETED  written last
  {output_dir}/tmp/...-chunk{k:05}(.COMPLETED, -iterator.*)                   while running

A chunk's records, then the input iterator's position after it, then its COMPLETED marker
are written in that order, so a restart resumes after the last marked chunk: no record is
lost or written twice.
"""
import glob
import json
import os
from typing import Iterable

from musiclm_jax.core import files


class ChunkedJsonlWriter:

  def __init__(self, output_dir: str, task: str, mode: str, process_index: int = 0,
               process_count: int = 1):
    self.output_dir = output_dir
    name = f"{task}-{mode}.jsonl-{process_index:05d}-of-{process_count:05d}"
    self.path = os.path.join(output_dir, name)
    self.tmp_dir = os.path.join(output_dir, "tmp")
    self._chunk_prefix = os.path.join(self.tmp_dir, name + "-chunk")
    os.makedirs(self.tmp_dir, exist_ok=True)

  def is_complete(self) -> bool:
    return os.path.exists(self.path + ".COMPLETED")

  def _chunk(self, k: int) -> str:
    return f"{self._chunk_prefix}{k:05d}"

  def iterator_prefix(self, k: int) -> str:
    return self._chunk(k) + "-iterator"

  def completed_chunks(self) -> int:
    """Number of chunks finished (they are numbered from 0 without gaps)."""
    k = 0
    while os.path.exists(self._chunk(k) + ".COMPLETED"):
      k += 1
    return k

  def write_chunk(self, k: int, records: Iterable[dict], save_iterator) -> None:
    """Records first (atomically renamed), then `save_iterator(prefix)`, then the marker."""
    with files.atomic_path(self._chunk(k)) as tmp, open(tmp, "w") as f:
      for record in records:
        f.write(json.dumps(record) + "\n")
    save_iterator(self.iterator_prefix(k))
    open(self._chunk(k) + ".COMPLETED", "w").close()

  def finalize(self) -> int:
    """Concatenates the chunks into the result, marks it COMPLETED, removes tmp files.
    Returns the number of records."""
    count = 0
    with files.atomic_path(self.path) as tmp, open(tmp, "w") as out:
      for k in range(self.completed_chunks()):
        with open(self._chunk(k)) as chunk:
          for line in chunk:
            out.write(line)
            count += 1
    open(self.path + ".COMPLETED", "w").close()
    # Only this process's chunks: other processes may still be writing theirs into tmp/.
    for leftover in glob.glob(glob.escape(self._chunk_prefix) + "*"):
      os.remove(leftover)
    return count
