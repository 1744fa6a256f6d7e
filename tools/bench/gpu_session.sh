#!/usr/bin/env bash
# The one script a session lent a GPU runs (a lent GPU gives 15 minutes of device time in all, at most
# 10 a command): the open questions that need a GPU, most important first, each under its own time
# limit so one slow stage cannot starve the rest. Each stage's output goes to $OUT/<stage>.txt.
#
#   bash tools/bench/gpu_session.sh            # on the GPU machine, from the repository root
#   QUICK=1 bash tools/bench/gpu_session.sh    # CPU smoke test: the same stages on the tiny shapes
#
# 1. update_ragged: issue 24's packed update against padded and 6ND at the 3B shapes, both on cuDNN
#    (bf16), ragged lengths only, padded and pooled only (two programs to compile);
# 2. gpu_check: cuDNN against XLA, the 3B bf16 train step's MFU, the rollout's decode rate (issue 22);
# 3. gpu_check --preset 7b --lora 32: the 7B LoRA step's peak memory against the plan (issue 25).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${QUICK:-0}" = 1 ]; then
  ragged=(--quick --cases ragged --layouts pooled); check=(--tiny); big=(--tiny --lora 8 --skip-attention --skip-rollout)
else
  ragged=(--preset 3b --dtype bf16 --remat full --max-len 1024 --reps 2 --cases ragged --layouts pooled)
  check=(); big=(--preset 7b --params bf16 --lora 32 --skip-attention --skip-rollout)
fi
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/device.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/device.txt"

stage() {  # stage NAME SECONDS ARGS...: run one benchmark under a time limit, keep its output and status
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" python "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name: rc $rc in $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  grep -v "^{" "$OUT/$name.txt" | tail -n 6
}

stage update_ragged 240 tools/bench/update_ragged.py "${ragged[@]}"
stage gpu_check 240 tools/bench/gpu_check.py "${check[@]}"
stage gpu_check_7b_lora 100 tools/bench/gpu_check.py "${big[@]}"
