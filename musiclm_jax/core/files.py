"""Files that are either whole or absent: a reader (or a rerun after a kill) never sees half of
one. Every writer of the project that leaves a file for later goes through here."""
import contextlib
import json
import os
from typing import Any, Iterator


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
