#!/usr/bin/env bash
# The test suite (CPU only). Extra arguments go to pytest, e.g. `-m "not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
exec python -m pytest -q "$@"
