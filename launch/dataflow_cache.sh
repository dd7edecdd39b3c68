#!/usr/bin/env bash
# Caches seqio tasks (the tokenizing tasks: audio -> SoundStream / w2v-BERT / MuLan tokens) with
# seqio's cache_tasks_main on Google Cloud Dataflow. Beam ships this repository to the workers
# as a package built from setup.py, so every task module and tokenizer travels with it.
#
#   bash launch/dataflow_cache.sh --project=P --region=us-central1 --bucket=gs://B \
#     --tasks='fma_tokens_small_24k' [--module_import=musiclm_jax.data.token_tasks ...] \
#     [--tokenizers_gin=tasks/fma_tokens.gin --tokenizers_bindings="SOUNDSTREAM_DIR='gs://B/ss'; ..."] \
#     [--sdk_container_image=IMAGE] [--max_num_workers=64] [--machine_type=n2-highmem-8] [--dry_run]
#
# Reads TFDS data from gs://B/tensorflow_datasets, writes the cache to gs://B/seqio_cache
# (which the stage tasks then read: MUSICLM_SEQIO_CACHE_DIR=gs://B/seqio_cache). --dry_run prints
# the command. Locally, the same command with --runner=DirectRunner is what cache_tasks_main runs
# by default.
#
# The tokenizers: musiclm_jax/data/token_tasks.py reads them from $MUSICLM_TOKENIZERS_GIN and
# $MUSICLM_TOKENIZERS_GIN_BINDINGS (--tokenizers_gin / --tokenizers_bindings set them here).
# Dataflow workers do not inherit this machine's environment, so they need a worker image that
# sets both and holds the code (--sdk_container_image; launch/README.md has the Dockerfile);
# with an image, setup.py is not shipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
PROJECT="" REGION="" BUCKET="" TASKS="" DRY_RUN=0 MAX_WORKERS=64 MACHINE=n2-highmem-8
TOKENIZERS_GIN="" TOKENIZERS_BINDINGS="" IMAGE=""
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
    --tokenizers_gin=*) TOKENIZERS_GIN="${arg#*=}" ;;
    --tokenizers_bindings=*) TOKENIZERS_BINDINGS="${arg#*=}" ;;
    --sdk_container_image=*) IMAGE="${arg#*=}" ;;
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
[ ${#MODULES[@]} -gt 0 ] || MODULES=(musiclm_jax.data.token_tasks)
if [ -n "$TOKENIZERS_GIN$TOKENIZERS_BINDINGS" ] && [ -z "$IMAGE" ]; then
  echo "dataflow_cache.sh: --tokenizers_gin/--tokenizers_bindings reach only this machine; the" \
       "Dataflow workers need them too: pass --sdk_container_image (see launch/README.md)" >&2
  exit 2
fi

# Dataflow options, one comma-separated flag (cache_tasks_main splits it for Beam).
OPTIONS="--runner=DataflowRunner,--project=$PROJECT,--region=$REGION"
OPTIONS+=",--temp_location=$BUCKET/dataflow/tmp,--staging_location=$BUCKET/dataflow/staging"
if [ -n "$IMAGE" ]; then
  OPTIONS+=",--sdk_container_image=$IMAGE,--max_num_workers=$MAX_WORKERS"
else
  OPTIONS+=",--setup_file=$ROOT/setup.py,--max_num_workers=$MAX_WORKERS"
fi
OPTIONS+=",--machine_type=$MACHINE,--experiments=use_runner_v2"

# env(1): the launcher imports musiclm_jax.data.token_tasks too and reads the tokenizers' checkpoints.
ENVS=()
[ -z "$TOKENIZERS_GIN" ] || ENVS+=("MUSICLM_TOKENIZERS_GIN=$TOKENIZERS_GIN")
[ -z "$TOKENIZERS_BINDINGS" ] || ENVS+=("MUSICLM_TOKENIZERS_GIN_BINDINGS=$TOKENIZERS_BINDINGS")
CMD=()
[ ${#ENVS[@]} -eq 0 ] || CMD+=(env "${ENVS[@]}")
CMD+=("$PYTHON" -m seqio.scripts.cache_tasks_main)
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
