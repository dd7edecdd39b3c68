"""launch/: the TPU VM and Dataflow commands (checked through --dry_run, exactly as they would
run) and the local N-process launcher."""
import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPU_VM = [sys.executable, os.path.join(REPO, "launch", "tpu_vm.py")]
LOCAL = [sys.executable, os.path.join(REPO, "launch", "local.py")]
DATAFLOW = ["bash", os.path.join(REPO, "launch", "dataflow_cache.sh")]
SLICE = ["--name=musiclm", "--zone=us-central2-b", "--project=proj"]
GCLOUD = ["gcloud", "compute", "tpus", "tpu-vm"]
WHERE = ["--zone=us-central2-b", "--project=proj"]


def _dry_run(*args):
  # --dry_run goes before the job's `--`: after it, it would be the job's flag.
  args = list(args)
  at = args.index("--") if "--" in args else len(args)
  result = subprocess.run([*TPU_VM, *args[:at], "--dry_run", *args[at:]], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines()]


def test_create_prints_the_gcloud_create_command():
  assert _dry_run("create", *SLICE, "--accelerator_type=v5litepod-256", "--spot") == [
      [*GCLOUD, "create", "musiclm", "--accelerator-type=v5litepod-256",
       "--version=v2-alpha-tpuv5-lite", "--spot", *WHERE]]


def test_setup_ships_the_committed_tree_to_every_worker():
  archive, scp, ssh = _dry_run("setup", *SLICE, "--ref=abc123")
  assert archive == ["git", "-C", REPO, "archive", "--format=tar.gz",
                     "--output=/tmp/musiclm_jax_src.tar.gz", "abc123"]
  assert scp == [*GCLOUD, "scp", "/tmp/musiclm_jax_src.tar.gz", "musiclm:~/", "--worker=all",
                 *WHERE]
  assert ssh[:7] == [*GCLOUD, "ssh", "musiclm", "--worker=all"] and ssh[-2:] == WHERE
  remote = ssh[7].removeprefix("--command=")
  assert "python3.11 -m venv .venv" in remote
  assert remote.endswith(".venv/bin/pip install --quiet -e '.[tpu]'")


def test_run_starts_the_job_on_all_workers_with_its_quoting_intact():
  job = ["python", "-m", "musiclm_jax.train", "--gin_file=models/semantic/paper.gin",
         "--gin.MODEL_DIR='gs://bucket/semantic paper'", "--gin.TRAIN_STEPS=10"]
  (ssh,) = _dry_run("run", *SLICE, "--", *job)
  assert ssh[:7] == [*GCLOUD, "ssh", "musiclm", "--worker=all"] and ssh[-2:] == WHERE
  remote = shlex.split(ssh[7].removeprefix("--command="))
  # No --coordinator_address: on a TPU VM each worker finds the others itself.
  assert remote == ["cd", "~/musiclm_jax", "&&", ".venv/bin/python", *job[1:]]


def test_run_with_a_log_detaches_the_job():
  (ssh,) = _dry_run("run", *SLICE, "--log=train.log", "--", "python", "-m", "musiclm_jax.train")
  remote = ssh[7].removeprefix("--command=")
  assert remote == ("cd ~/musiclm_jax && nohup .venv/bin/python -m musiclm_jax.train "
                    "> train.log 2>&1 &")


def test_delete_and_a_missing_job_are_handled():
  assert _dry_run("delete", *SLICE) == [[*GCLOUD, "delete", "musiclm", "--quiet", *WHERE]]
  result = subprocess.run([*TPU_VM, "run", *SLICE, "--dry_run"], capture_output=True,
                          text=True, timeout=60)
  assert result.returncode != 0 and "give the job after --" in result.stderr


def test_dataflow_cache_prints_the_cache_tasks_main_command():
  result = subprocess.run([*DATAFLOW, "--project=proj", "--region=us-central1",
                           "--bucket=gs://bucket/", "--tasks=fma_tokens.*",
                           "--module_import=musiclm_jax.data.audio_tasks", "--module_import=musiclm_jax.data.fma",
                           "--max_num_workers=8", "--dry_run"],
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  options = ",".join([
      "--runner=DataflowRunner", "--project=proj", "--region=us-central1",
      "--temp_location=gs://bucket/dataflow/tmp", "--staging_location=gs://bucket/dataflow/staging",
      f"--setup_file={REPO}/setup.py", "--max_num_workers=8", "--machine_type=n2-highmem-8",
      "--experiments=use_runner_v2"])
  assert shlex.split(result.stdout) == [
      "python", "-m", "seqio.scripts.cache_tasks_main", "--module_import=musiclm_jax.data.audio_tasks",
      "--module_import=musiclm_jax.data.fma", "--tasks=fma_tokens.*",
      "--output_cache_dir=gs://bucket/seqio_cache",
      "--tfds_data_dir=gs://bucket/tensorflow_datasets", f"--pipeline_options={options}",
      "--alsologtostderr"]


def _read_log(log_dir, process):
  with open(os.path.join(log_dir, f"process_{process}.log"), errors="replace") as f:
    return f.read()


@pytest.mark.parametrize("args, message", [
    (["--project=p", "--region=r", "--tasks=t"], "--bucket is required"),
    (["--project=p", "--region=r", "--tasks=t", "--bucket=/local"], "--bucket must be gs://"),
    (["--nope"], "unknown argument --nope"),
])
def test_dataflow_cache_rejects_bad_arguments(args, message):
  result = subprocess.run([*DATAFLOW, *args, "--dry_run"], capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 2 and message in result.stderr


def test_launcher_stops_the_others_when_one_process_fails(tmp_path):
  # Process 1 exits with 3 at once; process 0 would sleep for a minute.
  script = ("import sys, time\n"
            "pid = int([a for a in sys.argv if a.startswith('--process_id=')][0].split('=')[1])\n"
            "sys.exit(3) if pid == 1 else time.sleep(60)\n")
  command = [*LOCAL, "--num_processes=2", f"--log_dir={tmp_path}", "--", sys.executable,
             "-c", script]
  result = subprocess.run(command, capture_output=True, text=True, timeout=50)
  assert result.returncode == 3


def test_launcher_passes_coordinator_flags_and_devices(tmp_path):
  script = ("import os, sys\n"
            "print(' '.join(sys.argv[1:]), os.environ['XLA_FLAGS'], os.environ['JAX_PLATFORMS'])\n")
  command = [*LOCAL, "--num_processes=3", "--devices_per_process=2", "--port=4567",
             f"--log_dir={tmp_path}", "--", sys.executable, "-c", script]
  clean_env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  assert subprocess.run(command, env=clean_env, timeout=50).returncode == 0
  for i in range(3):
    line = _read_log(tmp_path, i).strip()
    assert line == (f"--coordinator_address=127.0.0.1:4567 --num_processes=3 --process_id={i} "
                    "--xla_force_host_platform_device_count=2 cpu")


