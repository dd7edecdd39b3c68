"""TPU slices as planning sees them: per-chip HBM, its bandwidth and peak FLOP/s, slice
names -> topologies, and libtpu's compile-only devices for a slice this machine is not
attached to.

Figures are the public per-chip specifications (HBM capacity as installed; the runtime keeps
a little of it for itself, so treat headroom under ~0.5 GiB as not fitting).
"""
import dataclasses
import importlib.util
import os
from typing import Mapping

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation. peak_flops: dense bf16 matmul FLOP/s per chip (the vendor figure;
  float32 matmuls also run at it, as JAX's default TPU precision is one bf16 pass).
  hbm_bandwidth: HBM bytes/s per chip (the vendor's GB/s, decimal: 1 GB/s = 1e9 bytes/s),
  the bound of a decode step, which reads every parameter for a few tokens."""
  hbm_bytes: int
  peak_flops: float
  hbm_bandwidth: float
  # Slice names count TensorCores on v4/v5p (two per chip, fused into one JAX device by
  # "megacore") and chips on v5e/v6e.
  cores_per_chip: int
  chip_config_name: str
  # Topology per number of chips: 3-D tori for v4/v5p, 2-D for v5e/v6e.
  topologies: Mapping[int, str]


_TORUS_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
             256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_TORUS_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}

CHIPS = {
    "v4": Chip(32 * GIB, 275e12, 1228e9, 2, "megacore", _TORUS_3D),
    "v5e": Chip(16 * GIB, 197e12, 819e9, 1, "default", _TORUS_2D),
    "v5p": Chip(95 * GIB, 459e12, 2765e9, 2, "megacore", _TORUS_3D),
    "v6e": Chip(32 * GIB, 918e12, 1640e9, 1, "default", _TORUS_2D),
}


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str        # as gcloud names it: "v4-128", "v5e-256" (also "v5litepod-256")
  chip: str
  num_chips: int
  topology: str    # for get_topology_desc: "v4:4x4x4"

  @property
  def spec(self) -> Chip:
    return CHIPS[self.chip]


def parse_slice(name: str) -> Slice:
  """`v4-128` (64 chips, 4x4x4), `v5e-256` / `v5litepod-256` (256 chips, 16x16)."""
  chip, _, count = name.replace("v5litepod", "v5e").partition("-")
  if chip not in CHIPS or not count.isdigit():
    raise ValueError(f"TPU slice {name!r}: expected <chip>-<size> with chip in {sorted(CHIPS)}, "
                     "e.g. v4-128 or v5e-256")
  spec = CHIPS[chip]
  chips = int(count) // spec.cores_per_chip
  if chips not in spec.topologies:
    sizes = sorted(n * spec.cores_per_chip for n in spec.topologies)
    raise ValueError(f"TPU slice {name!r}: {chip} slices come in sizes {sizes}")
  return Slice(name, chip, chips, f"{chip}:{spec.topologies[chips]}")


def libtpu_available() -> bool:
  return importlib.util.find_spec("libtpu") is not None


def topology_devices(tpu_slice: Slice) -> list:
  """Compile-only devices of the slice (one per chip)."""
  if not libtpu_available():
    raise ValueError("planning for a TPU slice needs libtpu: pip install -e '.[tpu]'")
  # libtpu reads these when it loads. Without them it looks for TPU metadata (and logs errors
  # on a machine that is not a TPU VM); the values only describe this host, not the target.
  # ALLOW_MULTIPLE_LIBTPU_LOAD: libtpu takes a machine-wide lock meant for real chips; a
  # compile-only client owns no chip, so several plans (or engineers) may compile at once.
  for key, value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_ACCELERATOR_TYPE", "v4-8"),
                     ("TPU_WORKER_HOSTNAMES", "localhost"), ("TPU_WORKER_ID", "0"),
                     ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
    os.environ.setdefault(key, value)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  return topologies.get_topology_desc(
      platform="tpu", topology_name=tpu_slice.topology,
      chip_config_name=tpu_slice.spec.chip_config_name).devices

