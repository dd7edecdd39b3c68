"""Files that are either whole or absent: a reader (or a rerun after a kill) never sees half of
one. Every writer of the project that leaves a file for later goes through here."""
import contextlib
import json
import os
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
  """Yields a temporary name beside `path`; renames it onto `path` when the block succeeds.

  `suffix` ends the temporary name, for writers that pick a format from the extension
  (soundfile: ".wav") or append one (numpy: ".npz"). The process id keeps two writers of the
  same file (two hosts, two workers) from sharing a temporary file.
  """
  tmp = f"{path}.{os.getpid()}.tmp{suffix}"
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(text)


def write_json(path: str, value: Any, indent: int = 1) -> None:
  write_text(path, json.dumps(value, indent=indent) + "\n")


def save_npz(path, **arrays) -> str:
  """Writes `arrays` to the .npz file `path` (folders made, atomically); returns the path."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_path(path, suffix=".npz") as tmp:  # np.savez appends .npz otherwise
    np.savez(tmp, **arrays)
  return path


def load_npz(path, keys, what: str, made_by: str) -> dict[str, np.ndarray]:
  """The arrays `keys` of the .npz file `path`, which holds a `what`; a missing file names the
  command that makes one (`made_by`), a file without those arrays names what it lacks."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{what} not found: {path} (make it with `{made_by}`)")
  with np.load(path) as data:
    missing = sorted(set(keys) - set(data.files))
    if missing:
      raise ValueError(f"{path} is not a {what}: it lacks {missing}")
    return {k: data[k] for k in keys}
