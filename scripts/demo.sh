#!/usr/bin/env bash
# The main job: text -> music end to end on the synthetic set, tiny models, this CPU.
# Builds the data, trains the six parts, caches the tokens, generates, evaluates and writes
# the listening page output/demo/generations/index.html. A rerun skips finished steps.
# Extra arguments go to `python -m musiclm_jax.demo` (--dry_run, --output_dir, --only, ...).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
exec python -m musiclm_jax.demo "$@"
