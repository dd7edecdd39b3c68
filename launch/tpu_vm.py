r"""Creates a Cloud TPU VM slice, installs this repository on every worker and runs a gin job.

  python launch/tpu_vm.py create --name=musiclm --zone=us-central2-b --accelerator_type=v4-128
  python launch/tpu_vm.py setup  --name=musiclm --zone=us-central2-b
  python launch/tpu_vm.py run    --name=musiclm --zone=us-central2-b -- \
    python -m musiclm_jax.train --gin_file=models/semantic/paper.gin --gin_file=runs/train.gin \
      --gin_file=tasks/<task>.gin --gin.MODEL_DIR="'gs://bucket/semantic'" --gin.TRAIN_STEPS=100000
  python launch/tpu_vm.py delete --name=musiclm --zone=us-central2-b

`run` starts the same command on all workers (`gcloud ... ssh --worker=all`); each joins the
others through the TPU metadata (musiclm_jax/core/distributed.py), reads its own data shard and
writes its own checkpoint shards, so MODEL_DIR must be on GCS. Add --dry_run to any of them
to print the exact commands instead of running them. Plan the slice first:
`python -m musiclm_jax.plan` (on any machine) says whether the config fits its HBM.
"""
import argparse
import os
import shlex
import subprocess
import sys
from typing import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where the code lives on each worker, relative to the ssh user's home.
REMOTE_DIR = "musiclm_jax"
ARCHIVE = "/tmp/musiclm_jax_src.tar.gz"
DEFAULT_VERSION = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                   "v5e": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}


def _tpu(args, verb: str, *operands: str) -> list[str]:
  """`gcloud compute tpus tpu-vm VERB OPERANDS --zone --project`."""
  project = [f"--project={args.project}"] if args.project else []
  return ["gcloud", "compute", "tpus", "tpu-vm", verb, *operands, f"--zone={args.zone}",
          *project]


def _on_all_workers(args, remote: str) -> list[str]:
  return _tpu(args, "ssh", args.name, "--worker=all", f"--command={remote}")


def create_commands(args) -> list[list[str]]:
  version = args.version or DEFAULT_VERSION.get(args.accelerator_type.split("-")[0])
  if version is None:
    raise SystemExit(f"tpu_vm.py: no default --version for {args.accelerator_type}; pass one")
  extra = [f"--accelerator-type={args.accelerator_type}", f"--version={version}"]
  if args.spot:
    extra.append("--spot")
  return [_tpu(args, "create", args.name, *extra)]


def setup_commands(args) -> list[list[str]]:
  """Ships the committed tree (git archive: what was reviewed, not local leftovers) and
  installs it with the TPU extra into a venv on every worker."""
  install = " && ".join([
      f"rm -rf ~/{REMOTE_DIR}", f"mkdir -p ~/{REMOTE_DIR}",
      f"tar -xzf ~/{os.path.basename(ARCHIVE)} -C ~/{REMOTE_DIR}", f"cd ~/{REMOTE_DIR}",
      # setup.py pins Python 3.11; the TPU VM images ship 3.10.
      "sudo apt-get update -qq", "sudo apt-get install -y -qq python3.11 python3.11-venv",
      "python3.11 -m venv .venv", ".venv/bin/pip install --quiet --upgrade pip",
      ".venv/bin/pip install --quiet -e '.[tpu]'"])
  return [
      ["git", "-C", REPO, "archive", "--format=tar.gz", f"--output={ARCHIVE}", args.ref],
      _tpu(args, "scp", ARCHIVE, f"{args.name}:~/", "--worker=all"),
      _on_all_workers(args, install),
  ]


def run_commands(args) -> list[list[str]]:
  if not args.job:
    raise SystemExit("tpu_vm.py run: give the job after --, e.g. "
                     "-- python -m musiclm_jax.train ...")
  job = list(args.job)
  if job[0] in ("python", "python3"):
    job[0] = ".venv/bin/python"
  remote = f"cd ~/{REMOTE_DIR} && " + shlex.join(job)
  if args.log:
    # Detached, so the job outlives the ssh session; its output stays on each worker.
    remote = f"cd ~/{REMOTE_DIR} && nohup {shlex.join(job)} > {shlex.quote(args.log)} 2>&1 &"
  return [_on_all_workers(args, remote)]


def delete_commands(args) -> list[list[str]]:
  return [_tpu(args, "delete", args.name, "--quiet")]


COMMANDS = {"create": create_commands, "setup": setup_commands, "run": run_commands,
            "delete": delete_commands}


def parse(argv: Sequence[str]):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("action", choices=sorted(COMMANDS))
  parser.add_argument("--name", required=True, help="TPU VM (slice) name")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None)
  parser.add_argument("--accelerator_type", default="v4-8",
                      help="create: e.g. v4-128, v5litepod-256")
  parser.add_argument("--version", default=None, help="create: TPU VM software version")
  parser.add_argument("--spot", action="store_true", help="create: a preemptible (spot) slice")
  parser.add_argument("--ref", default="HEAD", help="setup: the git commit to ship")
  parser.add_argument("--log", default=None,
                      help="run: detach the job (nohup) and write its output to this file")
  parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  # The job is everything after `--`, split off first: its own flags are not ours.
  argv = list(argv)
  split = argv.index("--") if "--" in argv else len(argv)
  args = parser.parse_args(argv[:split])
  args.job = argv[split + 1:]
  if args.job and args.action != "run":
    parser.error(f"only run takes a job; {args.action} got {args.job}")
  return args


def main(argv: Sequence[str]) -> int:
  args = parse(argv)
  commands = COMMANDS[args.action](args)
  for command in commands:
    if args.dry_run:
      print(shlex.join(command))
      continue
    status = subprocess.run(command).returncode
    if status:
      print(f"tpu_vm.py: failed ({status}): {shlex.join(command)}", file=sys.stderr)
      return status
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
