"""Our logical axis rules on t5x's `(data, model)` mesh.

Our mesh is `(data, fsdp, model)`; t5x's PjitPartitioner builds `(data, model)`. Both of our
batch axes become t5x's `data`; with `shard_params_over_data`, the parameters our rules put on
`fsdp` (the embed axis) shard over `data` as well, as t5x's `parameter_partitioning_dims=2`
does; otherwise they are replicated over it, as t5x's default rules do.
"""
import functools
from typing import Optional, Sequence

import gin
import jax
import numpy as np
from jax.sharding import Mesh
from t5x import partitioning as t5x_partitioning

from musiclm_jax.core import partitioning

_T5X_AXIS = {"data": "data", "fsdp": "data", "model": "model"}
_T5X_MESH_AXES = ("data", "model")


@gin.configurable(module="t5x_bridge")
def logical_axis_rules(rules: Optional[Sequence[tuple]] = None,
                       shard_params_over_data: bool = False) -> tuple:
  """`rules` (default: partitioning.logical_axis_rules()) with mesh axes renamed for t5x."""
  rules = partitioning.logical_axis_rules() if rules is None else rules
  out = []
  for name, axes in rules:
    names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    unknown = [a for a in names if a not in _T5X_AXIS]
    if unknown:
      raise ValueError(f"logical axis {name!r} maps to mesh axes {unknown}, which t5x's "
                       f"(data, model) mesh has no counterpart for")
    is_param_fsdp = names == ("fsdp",) and not name.startswith("activation_")
    if is_param_fsdp and not shard_params_over_data:
      names = ()
    mapped = tuple(dict.fromkeys(_T5X_AXIS[a] for a in names))
    out.append((name, None if not mapped else mapped[0] if len(mapped) == 1 else mapped))
  return tuple(out)


@gin.configurable(module="t5x_bridge")
class Partitioner(t5x_partitioning.PjitPartitioner):
  """t5x's PjitPartitioner with an explicit `(data, model)` mesh_shape when given (one entry
  may be -1). t5x's own mesh on CPU is always (processes, local devices), whatever
  num_partitions says, so a model axis of 2 over 8 CPU devices needs this; without
  mesh_shape the mesh is t5x's (num_partitions, model_parallel_submesh, ...)."""

  def __init__(self, num_partitions: Optional[int] = None, model_parallel_submesh=None, *,
               mesh_shape: Optional[Sequence[int]] = None, **kwargs):
    if mesh_shape is not None and not (num_partitions or model_parallel_submesh):
      num_partitions = max(int(tuple(mesh_shape)[-1]), 1)  # t5x asks for one; the mesh rules
    super().__init__(num_partitions, model_parallel_submesh, **kwargs)
    self._mesh_shape = None if mesh_shape is None else tuple(mesh_shape)

  @functools.cached_property
  def mesh(self) -> Mesh:
    if self._mesh_shape is None:
      return super().mesh
    devices = jax.devices(self._backend)
    try:
      shape = partitioning.resolve_mesh_shape(self._mesh_shape, len(devices), _T5X_MESH_AXES)
    except partitioning.MeshError as error:
      raise ValueError(f"t5x_bridge.Partitioner.mesh_shape {self._mesh_shape} does not fit "
                       f"{len(devices)} devices: {error}") from None
    return Mesh(np.asarray(devices).reshape(shape), _T5X_MESH_AXES)
