#!/usr/bin/env bash
# The plan table of docs/pods.md: every paper-size model ahead-of-time compiled for v4-32, v4-128 and
# v5e-256 on this (CPU) machine. Needs libtpu (pip install -e '.[tpu]'). Each compile takes
# under a minute to ~5 minutes on 2 cores and up to ~18 GB of host RAM (SoundStream for
# v4-128): one model at a time.
#
#   [SAMPLE=0] [FLASH=0] [REMAT=0] [SAMPLE_ONLY=1] bash launch/plan_paper.sh OUT_DIR [MODEL ...]
#   MODEL: semantic coarse fine soundstream w2v_bert mulan mulan_bert_base (default: all);
#   mulan is the offline default (MiniLM text tower), mulan_bert_base the paper's BERT-base
#   text tower (models/mulan/paper_bert_base.gin). SAMPLE=0 skips the
#   stages' sampling rows, FLASH=0 their rows with the Pallas flash attention kernel, REMAT=0
#   the coarse stage's rows with the other two remat policies ('none', 'full').
#   SAMPLE_ONLY=1 (stages only) makes just the sampling rows, in seconds, and keeps the other
#   rows already in OUT_DIR/<model>.jsonl byte for byte (docs/pods.md: refreshing the
#   committed sampling rows that way).
#
# Writes OUT_DIR/<model>.jsonl (one row per slice and step) and OUT_DIR/table.md, rendered from
# every <model>.jsonl present, so subsets can run in parallel and be joined at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
shift
ALL=(semantic coarse fine soundstream w2v_bert mulan mulan_bert_base)
MODELS=("${@:-${ALL[@]}}")
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
SLICES="['v4-32', 'v4-128', 'v5e-256']"
# Global batch per step, the same on every slice (stated in docs/pods.md).
BATCH=256

plan() {  # plan MODEL_NAME GIN_FILE [gin flags...]
  local name="$1" gin_file="$2"
  shift 2
  (cd "$ROOT" && "$PYTHON" -m musiclm_jax.plan --gin_file="$gin_file" --gin_file=runs/plan.gin \
    --gin.BATCH_SIZE=$BATCH --gin.planning.plan.name="'$name paper'" \
    --gin.planning.plan.output_file="'$OUT/$name.jsonl'" "$@")
}

over_slices() {  # over_slices FILE NAME: the slices where NAME's rows do not fit, as a gin list
  "$PYTHON" -c 'import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print([r["slice"] for r in rows if r["model"] == sys.argv[2] and r["verdict"] != "fits"])' "$@"
}

# Sampling at batch 8 on the small slices generation is planned for (KV cache per sequence,
# parameters over the chips); the rows carry the decode-step roofline (planning/roofline.py).
plan_sample() {  # plan_sample STAGE
  plan "$1" "models/$1/paper.gin" --gin.planning.plan.slices="['v5e-8', 'v4-8']" \
    --gin.BATCH_SIZE=8 --gin.planning.plan.steps="['sample']"
}

drop_sample_rows() {  # drop_sample_rows FILE: the other lines stay exactly as they are
  [ ! -f "$1" ] || "$PYTHON" -c 'import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip() and json.loads(l)["step"] != "sample"]
open(sys.argv[1], "w").writelines(lines)' "$1"
}

for model in "${MODELS[@]}"; do
  if [ "${SAMPLE_ONLY:-0}" = 1 ]; then
    case "$model" in
      semantic|coarse|fine) drop_sample_rows "$OUT/$model.jsonl"; plan_sample "$model" ;;
      *) echo "plan_paper.sh: SAMPLE_ONLY=1: $model has no sampling step" >&2; exit 2 ;;
    esac
    continue
  fi
  rm -f "$OUT/$model.jsonl"
  case "$model" in
    semantic|coarse|fine)
      plan "$model" "models/$model/paper.gin" --gin.planning.plan.slices="$SLICES" \
        --gin.planning.plan.steps="['train']"
      # The knob the rows above ask for, on the slices where the step does not fit.
      over="$(over_slices "$OUT/$model.jsonl" "$model paper")"
      if [ "$over" != "[]" ]; then
        plan "$model" "models/$model/paper.gin" --gin.planning.plan.slices="$over" \
          --gin.planning.plan.steps="['train']" --gin.TransformerConfig.remat=True \
          --gin.planning.plan.name="'$model paper, remat'"
        # ... and the next knob they ask for where remat alone is not enough.
        over="$(over_slices "$OUT/$model.jsonl" "$model paper, remat")"
        if [ "$over" != "[]" ]; then
          plan "$model" "models/$model/paper.gin" --gin.planning.plan.slices="$over" \
            --gin.planning.plan.steps="['train']" --gin.TransformerConfig.remat=True \
            --gin.TransformerConfig.dtype="'bfloat16'" \
            --gin.planning.plan.name="'$model paper, remat + bf16'"
        fi
      fi
      # The Pallas flash kernel instead of blockwise attention (layers/flash_attention.py).
      [ "${FLASH:-1}" = 0 ] || plan "$model" "models/$model/paper.gin" \
        --gin.planning.plan.slices="$SLICES" --gin.planning.plan.steps="['train']" \
        --gin.TransformerConfig.attention="'flash'" \
        --gin.planning.plan.name="'$model paper, flash'"
      # The remat policies besides the files' dots_saveable, on the stage with the longest
      # sequence (their effect on memory and FLOPs is the same in kind for the other two).
      if [ "$model" = coarse ] && [ "${REMAT:-1}" = 1 ]; then
        for policy in none full; do
          plan "$model" "models/$model/paper.gin" --gin.planning.plan.slices="$SLICES" \
            --gin.planning.plan.steps="['train']" --gin.TransformerConfig.remat="'$policy'" \
            --gin.planning.plan.name="'$model paper, remat $policy'"
        done
      fi
      [ "${SAMPLE:-1}" = 0 ] || plan_sample "$model" ;;
    soundstream)  # 1 s crops at 24 kHz
      plan "$model" models/soundstream/paper.gin --gin.planning.plan.slices="$SLICES" \
        --gin.TASK_FEATURE_LENGTHS="{'audio': 24000}" ;;
    w2v_bert)     # 10 s crops at 16 kHz
      plan "$model" models/w2v_bert/paper.gin --gin.planning.plan.slices="$SLICES" \
        --gin.TASK_FEATURE_LENGTHS="{'audio': 160000}" ;;
    mulan)        # 10 s windows at 16 kHz with captions
      plan "$model" models/mulan/paper.gin --gin.planning.plan.slices="$SLICES" \
        --gin.TASK_FEATURE_LENGTHS="{'audio': 160000}" ;;
    mulan_bert_base)
      plan "$model" models/mulan/paper.gin --gin_file=models/mulan/paper_bert_base.gin \
        --gin.planning.plan.slices="$SLICES" --gin.TASK_FEATURE_LENGTHS="{'audio': 160000}" \
        --gin.planning.plan.name="'mulan paper, BERT-base text'" ;;
    *) echo "plan_paper.sh: unknown model $model; expected one of ${ALL[*]}" >&2; exit 2 ;;
  esac
done

cat $(for m in "${ALL[@]}"; do [ -f "$OUT/$m.jsonl" ] && echo "$OUT/$m.jsonl"; done) \
  > "$OUT/all.jsonl"
(cd "$ROOT" && "$PYTHON" -m musiclm_jax.plan --render="$OUT/all.jsonl") | tee "$OUT/table.md"
