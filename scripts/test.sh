#!/usr/bin/env bash
# The test suite (CPU only), on two pytest-xdist workers (one per core; a test file stays on
# one worker, so its module fixtures are built once). Extra arguments go to pytest, e.g.
# `-m "not slow"`, or `-n 0` for one process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
# One persistent XLA compilation cache for the run, shared by both workers and every process
# they start: tests that train the same tiny model in several processes compile its steps once.
if [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
  JAX_COMPILATION_CACHE_DIR="$(mktemp -d -t musiclm_jax_tests_xla_cache.XXXXXX)"
  export JAX_COMPILATION_CACHE_DIR
  trap 'rm -rf "$JAX_COMPILATION_CACHE_DIR"' EXIT
fi
python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "$@"
