"""The musicnn package's TF1 checkpoints -> Flax variables for `musicnn.Musicnn`.

The PyPI package `musicnn` (ISC licence) is installed without its dependencies (it pins an
ancient numpy); only its data is used: `<package>/<model>/.index` + `.data-00000-of-00001`
(a TF1 checkpoint whose prefix is the directory itself) and the tag names in
`musicnn/configuration.py`. Reading the checkpoint needs TensorFlow's checkpoint reader (a
dependency already, through seqio); no TF graph is built.
"""
import importlib.util
import os
from typing import Optional

import numpy as np

MODELS = ("MTT_musicnn", "MSD_musicnn")
_BN_NAMES = {"gamma": ("params", "scale"), "beta": ("params", "bias"),
             "moving_mean": ("batch_stats", "mean"),
             "moving_variance": ("batch_stats", "var")}


def package_dir() -> str:
  """The installed musicnn package folder (found without importing it)."""
  spec = importlib.util.find_spec("musicnn")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the `musicnn` package is not installed (pip install --no-deps "
                            "musicnn==0.1.0); pass checkpoint_dir= to use a copy elsewhere")
  return list(spec.submodule_search_locations)[0]


def labels(model: str) -> list:
  from musicnn import configuration  # pylint: disable=import-outside-toplevel
  return list(configuration.MTT_LABELS if model.startswith("MTT") else configuration.MSD_LABELS)


def read_checkpoint(checkpoint_dir: str) -> dict:
  """{TF variable name: array} of a musicnn checkpoint folder, optimizer slots left out."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  prefix = os.path.join(checkpoint_dir, "")
  if not os.path.isfile(prefix + ".index"):
    raise FileNotFoundError(f"no musicnn checkpoint in {checkpoint_dir} (expected "
                            f"{prefix}.index and .data-00000-of-00001)")
  reader = tf.compat.v1.train.NewCheckpointReader(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
          if "Adam" not in name and not name.startswith("beta")}


def to_flax(tensors: dict) -> dict:
  """TF1 names (`conv2d_3/kernel`, `batch_normalization_2/moving_mean`) -> Flax variables.

  Kernels keep their layout (TF and Flax both store [kh, kw, in, out] / [in, out]); the
  mid-end convs, which Flax runs as 1-D convs over time, drop the singleton axis.
  """
  variables = {"params": {}, "batch_stats": {}}
  for name, value in tensors.items():
    layer, field = name.split("/")
    if field in _BN_NAMES:
      collection, leaf = _BN_NAMES[field]
    elif field in ("kernel", "bias"):
      collection, leaf = "params", field
      if field == "kernel" and value.ndim == 4 and value.shape[2] == 1 and value.shape[0] == 7 \
          and layer in ("conv2d_5", "conv2d_6", "conv2d_7"):
        value = value[:, :, 0, :]
    else:
      raise ValueError(f"unexpected variable {name} in the musicnn checkpoint")
    variables[collection].setdefault(layer, {})[leaf] = np.asarray(value, np.float32)
  return variables


def load(model: str = "MTT_musicnn", checkpoint_dir: Optional[str] = None):
  """(variables, tag names) of a released musicnn model."""
  if model not in MODELS:
    raise ValueError(f"musicnn model must be one of {MODELS}, got {model!r}")
  checkpoint_dir = checkpoint_dir or os.path.join(package_dir(), model)
  return to_flax(read_checkpoint(checkpoint_dir)), labels(model)
