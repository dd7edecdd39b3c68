#!/usr/bin/env bash
# The main job, for now: train the tiny semantic stage on the synthetic token task,
# writing orbax checkpoints, TensorBoard events and metrics.txt to output/semantic_tiny.
# Running it again resumes from the newest checkpoint (TRAIN_STEPS=600 to train further).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
MODEL_DIR="${MODEL_DIR:-$ROOT/output/semantic_tiny}"
TRAIN_STEPS="${TRAIN_STEPS:-300}"
python -m musiclm_jax.train \
  --gin_file=models/semantic/tiny.gin \
  --gin_file=runs/train.gin \
  --gin_file=tasks/synthetic_stage.gin \
  --gin.MODEL_DIR="'$MODEL_DIR'" \
  --gin.TRAIN_STEPS="$TRAIN_STEPS" \
  --gin.trainer.train.eval_every=100 \
  --gin.trainer.train.checkpoint_every=100 \
  --gin.trainer.train.log_every=25 \
  --alsologtostderr "$@"
echo "[demo] checkpoints: $(ls "$MODEL_DIR/checkpoints" | tr '\n' ' ')"
echo "[demo] last metrics: $(tail -n 1 "$MODEL_DIR/metrics.txt")"
echo "[demo] TensorBoard:  tensorboard --logdir $MODEL_DIR"
