"""Joins this process to a multi-process JAX run before anything touches a device.

Three ways a run is started, one call for all of them (`initialize`):
  * explicit: `--coordinator_address=10.0.0.2:1234 --num_processes=4 --process_id=1` (any
    cluster; `launch/local.py` uses it for N processes on 127.0.0.1 with CPU devices);
  * a Cloud TPU VM slice (`launch/tpu_vm.py`): no flags, JAX reads the worker list and this
    worker's id from the TPU metadata;
  * anything else: a single process, nothing to do.

`jax.distributed.initialize` must run before the first device query, so entry points call
this first thing in `main`, before gin builds a model or a mesh.
"""
import glob
import os
from typing import Optional

import jax
from absl import flags, logging

# (vendor, device) of TPU v4, v5p, v5e, v6e chips. Google's vendor id alone also matches
# other virtual devices of a cloud VM (e.g. its network card).
_TPU_PCI_IDS = {("0x1ae0", device) for device in ("0x005e", "0x0062", "0x0063", "0x006f")}


def define_flags() -> None:
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0's coordinator service (multi-process runs); "
                      "omitted on a TPU VM slice, where JAX reads it from the TPU metadata.")
  flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")


def on_tpu_vm() -> bool:
  """Whether TPU chips are attached to this host, read from PCI ids as JAX itself detects
  them. Checked on the file system so a CPU machine that merely has libtpu installed (for
  plan.py) never waits on a TPU metadata server that is not there."""
  for vendor_path in glob.glob("/sys/bus/pci/devices/*/vendor"):
    device_path = os.path.join(os.path.dirname(vendor_path), "device")
    try:
      with open(vendor_path) as vendor, open(device_path) as device:
        if (vendor.read().strip(), device.read().strip()) in _TPU_PCI_IDS:
          return True
    except OSError:
      continue
  return False


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> bool:
  """Initialises jax.distributed when the run has several processes; returns whether it did.

  Raises ValueError (one line, naming the flags) when only some of the three are given.
  """
  given = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
           "--process_id": process_id}
  if any(v is not None for v in given.values()):
    missing = [name for name, v in given.items() if v is None]
    if missing:
      raise ValueError(f"multi-process runs need all of --coordinator_address, "
                       f"--num_processes and --process_id; missing {', '.join(missing)}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must be in [0, --num_processes="
                       f"{num_processes})")
    # Cross-process collectives between CPU devices (the loopback test, a CPU cluster) go
    # through gloo over TCP; set explicitly, as the default has changed across JAX releases.
    # It only concerns the CPU client, so it is harmless on TPU.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif on_tpu_vm():
    # Every worker of a slice runs the same command; JAX finds the coordinator (worker 0)
    # and this worker's id in the TPU VM metadata. A single-host slice is a 1-process run.
    jax.distributed.initialize()
  else:
    return False
  logging.info("Process %d of %d; %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True

