r"""Runs one command as N JAX processes on this machine (127.0.0.1), each with its own CPU devices.

The local stand-in for a pod slice: the same multi-process code paths (jax.distributed,
per-process data shards, per-process checkpoint writes, gloo all-reduces between processes)
without a TPU. Used by tests/core/test_multihost.py.

  python launch/local.py --num_processes=2 --devices_per_process=4 --log_dir=/tmp/logs -- \
    python -m musiclm_jax.train --gin_file=... --gin.partitioning.create_mesh.mesh_shape="(2,4,1)"

Each process gets `--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i`
appended, JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=D. Output of
process i goes to LOG_DIR/process_i.log (or this terminal, prefixed, without --log_dir). If one
process fails the others are stopped, since they would wait for it forever in a collective.
Exits with the first non-zero exit status, else 0.
"""
import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Optional, Sequence


def free_port() -> int:
  """A TCP port nobody listens on right now (the coordinator binds it a moment later)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def process_commands(command: Sequence[str], num_processes: int, port: int) -> list[list[str]]:
  return [[*command, f"--coordinator_address=127.0.0.1:{port}",
           f"--num_processes={num_processes}", f"--process_id={i}"]
          for i in range(num_processes)]


def process_env(devices_per_process: int, base: Optional[dict] = None) -> dict:
  env = dict(os.environ if base is None else base)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count="
                               f"{devices_per_process}"])
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _pump(stream, prefix: str) -> None:
  for line in iter(stream.readline, b""):
    sys.stdout.write(f"{prefix}{line.decode(errors='replace')}")
    sys.stdout.flush()


def run(command: Sequence[str], num_processes: int, devices_per_process: int,
        log_dir: Optional[str] = None, timeout: Optional[float] = None,
        port: Optional[int] = None) -> int:
  """Starts the processes, waits for all; returns the first non-zero exit status, else 0."""
  port = port or free_port()
  env = process_env(devices_per_process)
  procs, logs, pumps = [], [], []
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)
  for i, argv in enumerate(process_commands(command, num_processes, port)):
    if log_dir:
      log = open(os.path.join(log_dir, f"process_{i}.log"), "wb")
      logs.append(log)
      procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    else:
      proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
      pump = threading.Thread(target=_pump, args=(proc.stdout, f"[{i}] "), daemon=True)
      pump.start()
      procs.append(proc)
      pumps.append(pump)
  deadline = None if timeout is None else time.monotonic() + timeout
  status = 0
  try:
    while True:
      codes = [p.poll() for p in procs]  # every one, so each returncode is fresh
      if None not in codes:
        break
      failed = [c for c in codes if c not in (None, 0)]
      if failed or (deadline is not None and time.monotonic() > deadline):
        status = failed[0] if failed else 124
        break
      time.sleep(0.1)
  finally:
    for p in procs:
      if p.poll() is None:
        p.terminate()
    for p in procs:
      try:
        p.wait(timeout=30)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    for pump in pumps:
      pump.join(timeout=5)
    for log in logs:
      log.close()
  return status or next((p.returncode for p in procs if p.returncode), 0)


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--log_dir", default=None, help="process_<i>.log per process")
  parser.add_argument("--timeout", type=float, default=None, help="seconds; then stop all (124)")
  parser.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("no command given (put it after --)")
  if args.num_processes < 1 or args.devices_per_process < 1:
    parser.error("--num_processes and --devices_per_process must be positive")
  return run(command, args.num_processes, args.devices_per_process, args.log_dir,
             args.timeout, args.port)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
