#!/usr/bin/env bash
# Creates or refreshes ./.venv with the pinned dependencies. Sourced by demo.sh and test.sh.
# Re-installs only when setup.py changed since the last successful install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="$ROOT/.venv"
STAMP="$VENV/.installed-$(sha256sum "$ROOT/setup.py" | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[venv] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  echo "[venv] installing pinned dependencies (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
