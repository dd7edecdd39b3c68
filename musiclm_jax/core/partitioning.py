"""Device mesh and the one table of logical -> mesh axis rules.

Mesh axes: `data` (pure data parallelism), `fsdp` (batch *and* parameter sharding, ZeRO-3
style), `model` (tensor parallelism over heads / mlp / vocab). Modules name their axes
logically; this table alone decides the parallelism of a run, and it is a gin binding.
"""
import math
from typing import Optional, Sequence

import flax.linen as nn
import gin
from absl import logging
import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")
# The axes a batch splits over (the "batch" logical axes; the model axis splits weights).
BATCH_AXES = ("data", "fsdp")

# (logical axis, mesh axis or axes or None). Parameters: embed over fsdp, the "wide" axes
# over model. Activations keep their embed unsharded (it is the contraction axis of every
# matmul) and split the batch over data x fsdp.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("relpos_buckets", None),
    # The stacked layer axis of scanned layers (TransformerConfig.scan_layers): every device
    # holds its share of every layer.
    ("layers", None),
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "model"),
    ("activation_heads", "model"),
    ("activation_kv", None),
    ("activation_vocab", "model"),
    # w2v-BERT: the feature encoder's projection reads (mels / 4) x channels; the Gumbel
    # quantizer's codewords and the contrastive projection are codebook_dim wide. Small.
    ("mel_bins", None),
    ("codebook_dim", None),
    # MuLan: the 128-d joint embedding, the audio tower's pooled features and BERT's position
    # and token-type tables are small; the [batch, batch] logits shard their rows only.
    ("joint_embed", None),
    ("activation_joint", None),
    ("audio_features", None),
    ("text_positions", None),
    ("token_types", None),
)


class MeshError(ValueError):
  """The requested mesh cannot be built from the available devices."""


@gin.configurable
def logical_axis_rules(rules: Sequence[tuple] = DEFAULT_RULES) -> tuple:
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int,
                       axes: Sequence[str] = MESH_AXES) -> tuple[int, ...]:
  """`mesh_shape` (one entry per axis of `axes`, at most one -1) with its -1 filled in so the
  mesh covers exactly `num_devices`; MeshError otherwise."""
  shape = list(mesh_shape)
  if len(shape) != len(axes):
    raise MeshError(f"mesh_shape {tuple(mesh_shape)} must have {len(axes)} entries "
                    f"{tuple(axes)}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise MeshError(f"mesh_shape {tuple(mesh_shape)}: entries must be positive, at most one -1")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known:
      raise MeshError(f"mesh_shape {tuple(mesh_shape)} cannot divide {num_devices} devices")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise MeshError(f"mesh_shape {tuple(mesh_shape)} needs {math.prod(shape)} devices, "
                    f"but {num_devices} are available")
  return tuple(shape)


@gin.configurable
def create_mesh(mesh_shape: Sequence[int] = (-1, 1, 1), devices: Optional[Sequence] = None) -> Mesh:
  """Mesh `(data, fsdp, model)` over all devices; one entry of `mesh_shape` may be -1."""
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_mesh_shape(mesh_shape, len(devices))
  # Auto axes: GSPMD propagates shardings from our constraints (explicit sharding-in-types
  # would ask every op to be annotated).
  return jax.make_mesh(tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_to_shardings(mesh: Mesh, boxed_tree, rules) -> object:
  """NamedShardings for a tree whose leaves may be `nn.Partitioned` (unannotated leaves,
  e.g. step counters, are replicated). A dimension the rules would split over more devices
  than divide it (MiniLM's 384-d projection over a 256-chip fsdp axis) stays whole on each
  device: the rest of the array still shards, and the run does not refuse the slice."""
  specs = nn.get_partition_spec(boxed_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  # The boxes' values, without unbox()'s sharding constraint (there is no mesh context here).
  shapes = jax.tree.map(lambda x: x.value if nn.meta.is_axis_metadata(x) else x, boxed_tree,
                        is_leaf=nn.meta.is_axis_metadata)
  whole = []

  def divisible(path, sharding, leaf):
    spec = list(sharding.spec)
    for dim, axes in enumerate(spec):
      names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      if names and leaf.shape[dim] % math.prod(mesh.shape[a] for a in names):
        spec[dim] = None
        whole.append(f"{jax.tree_util.keystr(path)} dim {dim} ({leaf.shape[dim]} over {names})")
    return NamedSharding(mesh, PartitionSpec(*spec), memory_kind=sharding.memory_kind)

  fitted = jax.tree_util.tree_map_with_path(
      divisible, shardings, shapes, is_leaf=lambda x: isinstance(x, NamedSharding))
  if whole:
    logging.info("Not sharded (the mesh axes do not divide them): %s", "; ".join(whole))
  return fitted


def opt_state_shardings(optimizer: optax.GradientTransformation, abstract_opt_state,
                        param_shardings, mesh: Mesh):
  """Optimizer moments shard like their parameters; everything else is replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  try:
    return optax.tree_map_params(
        optimizer, lambda _, sharding: sharding, abstract_opt_state, param_shardings,
        transform_non_params=lambda subtree: jax.tree.map(lambda _: replicated, subtree),
        is_leaf=lambda x: isinstance(x, NamedSharding))
  except (AttributeError, TypeError, ValueError):
    # An optimizer that routes parameter groups (optax.multi_transform over a GAN's
    # {generator, discriminator}) cannot be initialised on optax's opaque placeholder.
    return _shardings_by_key_path(abstract_opt_state, param_shardings, replicated)


def _shardings_by_key_path(abstract_opt_state, param_shardings, replicated):
  """A state leaf whose key path ends with a parameter's path (e.g. `.../mu/generator/
  encoder/kernel`) and fits its sharding gets that sharding; the rest is replicated."""
  by_path = {tuple(path): sharding for path, sharding in jax.tree_util.tree_leaves_with_path(
      param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))}
  longest = max(map(len, by_path), default=0)

  def pick(path, leaf):
    for n in range(min(len(path), longest), 0, -1):
      sharding = by_path.get(tuple(path[-n:]))
      if sharding is not None:
        try:
          sharding.shard_shape(leaf.shape)
          return sharding
        except ValueError:
          return replicated
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def bytes_per_device(tree) -> int:
  """Largest number of bytes any single device holds of `tree` (arrays must be committed)."""
  totals: dict = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
  return max(totals.values()) if totals else 0


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def describe(mesh: Mesh) -> str:
  return " x ".join(f"{name}={size}" for name, size in mesh.shape.items()) + (
      f" over {np.size(mesh.devices)} {mesh.devices.flat[0].platform} devices")
