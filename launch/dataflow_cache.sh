#!/usr/bin/env bash
# Caches seqio tasks (the tokenizing tasks: audio -> SoundStream / w2v-BERT / MuLan tokens) with
# seqio's cache_tasks_main on Google Cloud Dataflow. Beam ships this repository to the workers
# as a package built from setup.py, so every task module and tokenizer travels with it.
#
#   bash launch/dataflow_cache.sh --project=P --region=us-central1 --bucket=gs://B \
#     --tasks='fma_tokens.*' [--module_import=tasks.audio_tasks ...] [--max_num_workers=64] \
#     [--machine_type=n2-highmem-8] [--dry_run]
#
# Reads TFDS data from gs://B/tensorflow_datasets, writes the cache to gs://B/seqio_cache
# (which training then reads with DatasetConfig.use_cached). --dry_run prints the command.
# Locally, the same command with --runner=DirectRunner is what cache_tasks_main runs by default.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
PROJECT="" REGION="" BUCKET="" TASKS="" DRY_RUN=0 MAX_WORKERS=64 MACHINE=n2-highmem-8
MODULES=()
for arg in "$@"; do
  case "$arg" in
    --project=*) PROJECT="${arg#*=}" ;;
    --region=*) REGION="${arg#*=}" ;;
    --bucket=*) BUCKET="${arg#*=}" ;;
    --tasks=*) TASKS="${arg#*=}" ;;
    --module_import=*) MODULES+=("${arg#*=}") ;;
    --max_num_workers=*) MAX_WORKERS="${arg#*=}" ;;
    --machine_type=*) MACHINE="${arg#*=}" ;;
    --dry_run) DRY_RUN=1 ;;
    *) echo "dataflow_cache.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
for name in PROJECT REGION BUCKET TASKS; do
  if [ -z "${!name}" ]; then
    echo "dataflow_cache.sh: --$(echo "$name" | tr '[:upper:]' '[:lower:]') is required" >&2
    exit 2
  fi
done
case "$BUCKET" in gs://*) ;; *) echo "dataflow_cache.sh: --bucket must be gs://..." >&2; exit 2 ;; esac
BUCKET="${BUCKET%/}"
[ ${#MODULES[@]} -gt 0 ] || MODULES=(tasks.audio_tasks)

# Dataflow options, one comma-separated flag (cache_tasks_main splits it for Beam).
OPTIONS="--runner=DataflowRunner,--project=$PROJECT,--region=$REGION"
OPTIONS+=",--temp_location=$BUCKET/dataflow/tmp,--staging_location=$BUCKET/dataflow/staging"
OPTIONS+=",--setup_file=$ROOT/setup.py,--max_num_workers=$MAX_WORKERS"
OPTIONS+=",--machine_type=$MACHINE,--experiments=use_runner_v2"

CMD=("$PYTHON" -m seqio.scripts.cache_tasks_main)
for module in "${MODULES[@]}"; do CMD+=("--module_import=$module"); done
CMD+=("--tasks=$TASKS" "--output_cache_dir=$BUCKET/seqio_cache"
      "--tfds_data_dir=$BUCKET/tensorflow_datasets" "--pipeline_options=$OPTIONS"
      --alsologtostderr)

if [ "$DRY_RUN" = 1 ]; then
  # shlex quoting: a line that can be pasted into a shell as it is.
  python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "${CMD[@]}"
else
  cd "$ROOT"
  "$PYTHON" -c "import apache_beam" 2>/dev/null || {
    echo "dataflow_cache.sh: needs Apache Beam: pip install -e '.[beam]'" >&2; exit 2; }
  exec "${CMD[@]}"
fi
