"""Atomic writes: a file is either the old one or the new one, never half of either."""
import json
import os

import numpy as np
import pytest

from musiclm_jax.core import files


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "state.json"
  files.write_json(path, {"step": 1})
  with pytest.raises(RuntimeError, match="killed"):
    with files.atomic_path(path) as tmp, open(tmp, "w") as f:
      f.write('{"step": 2, "tor')
      raise RuntimeError("killed mid-write")
  assert json.loads(path.read_text()) == {"step": 1}
  assert os.listdir(tmp_path) == ["state.json"]


def test_a_successful_write_replaces_the_file_and_keeps_the_writers_extension(tmp_path):
  path = tmp_path / "centroids.npz"
  path.write_text("old")
  with files.atomic_path(os.fspath(path), suffix=".npz") as tmp:
    assert tmp.endswith(".npz") and os.path.dirname(tmp) == os.fspath(tmp_path)
    np.savez(tmp, x=np.arange(3))  # would write tmp + ".npz" without the suffix
  with np.load(path) as data:
    np.testing.assert_array_equal(data["x"], np.arange(3))
  assert os.listdir(tmp_path) == ["centroids.npz"]
  files.write_text(tmp_path / "page.html", "<p>é</p>")
  assert (tmp_path / "page.html").read_text(encoding="utf-8") == "<p>é</p>"
