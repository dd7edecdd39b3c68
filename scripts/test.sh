#!/usr/bin/env bash
# The test suite (CPU only), on two pytest-xdist workers (one per core; a test file stays on
# one worker, so its module fixtures are built once). Extra arguments go to pytest, e.g.
# `-m "not slow"`, or `-n 0` for one process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
exec python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "$@"
