"""The released VGGish TF1 checkpoint (`vggish_model.ckpt`, downloaded by the user) -> Flax
parameters of `vggish.VGGish`. Read with TensorFlow's checkpoint reader; no graph is built.

TF-slim names: `vggish/conv1/weights` `[3, 3, in, out]`, `vggish/conv3/conv3_1/biases`,
`vggish/fc1/fc1_2/weights` `[in, out]`, `vggish/fc2/weights`; the layouts are Flax's already.
"""
import os

import jax
import numpy as np

_LEAVES = {"weights": "kernel", "biases": "bias"}


def read_checkpoint(path) -> dict:
  """{TF variable name: array} of a TF checkpoint (V1 single file or V2 prefix)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  if not (os.path.isfile(path) or os.path.isfile(path + ".index")):
    raise FileNotFoundError(f"VGGish checkpoint not found: {path} (download vggish_model.ckpt "
                            "from tensorflow/models research/audioset/vggish)")
  try:
    reader = tf.compat.v1.train.NewCheckpointReader(path)
  except Exception as error:  # TF raises DataLossError and friends for a bad file
    raise ValueError(f"{path} is not a readable TF checkpoint: {error}") from error
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def to_flax(tensors: dict) -> dict:
  params = {}
  for name, value in tensors.items():
    parts = name.split("/")
    if parts[0] != "vggish" or parts[-1] not in _LEAVES:
      continue  # e.g. global_step
    params.setdefault(parts[-2], {})[_LEAVES[parts[-1]]] = np.asarray(value, np.float32)
  if not params:
    raise ValueError("the checkpoint holds no vggish/... weights")
  return params


def load(path, network) -> dict:
  """Parameters for `network` (a `vggish.VGGish`), checked against its shapes."""
  params = to_flax(read_checkpoint(path))
  expected = jax.eval_shape(lambda: network.init(
      jax.random.key(0), np.zeros((1, 96, 64), np.float32)))["params"]
  want = {f"{layer}/{leaf}": tuple(v.shape) for layer, leaves in expected.items()
          for leaf, v in leaves.items()}
  got = {f"{layer}/{leaf}": tuple(v.shape) for layer, leaves in params.items()
         for leaf, v in leaves.items()}
  if want != got:
    diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    raise ValueError(f"{os.fspath(path)} does not fit this VGGish: "
                     + ", ".join(f"{k} {got.get(k)} vs expected {want.get(k)}" for k in diff[:6]))
  return params
