#!/usr/bin/env bash
# The GPU path in one go: CUDA-marked tests, the matmul peak, a 200-step `paper` training
# benchmark (bf16, channels-last; eager and compiled), DDP on 1 GPU through torchrun, detection
# of one synthetic 240x240x155 volume (128 px windows and whole slices), then ONE table
# (s/step, patches/s, s/volume, peak GPU memory, fraction of the bf16 matmul peak measured in
# the same run) and the on-paper time of the full 100k-step recipe on 1 and 8 GPUs.
#
# Needs: the project importable (this script puts <repo>/src first on PYTHONPATH; nothing is
# installed), torch with CUDA, monai, nibabel, numpy, scipy, pytest. Every step has a time
# limit and the whole run a budget (--budget, default 450 s); a step that fails or times out
# shows as such in its table row and the script goes on. Exit status 0 when the table was
# written, whatever the rows say.
#
# Usage:
#   bash benchmarks/tools/gpu_check.sh [--out FILE] [--budget S] [--steps N] [--device cuda]
#   PYTHON=/usr/bin/python3 bash benchmarks/tools/gpu_check.sh --out "$OUT/gpu_check.md"
#   bash benchmarks/tools/gpu_check.sh --device cpu --steps 2      # smoke run of the script itself
#
# Options:
#   --out FILE     also write the table here (default: $GPU_CHECK_OUT, else $OUT/gpu_check.md
#                  when $OUT is a folder, else ./gpu_check.md); step logs go to a
#                  gpu_check_logs/ folder next to it
#   --budget S     seconds for the whole run (default 450)
#   --steps N      timed training steps (default 200; 2 with --device cpu)
#   --device D     cuda (default) or cpu (smoke mode: `small` network, 16 patches, a 4-slice
#                  volume; figures are meaningless, the point is that every step runs)
#   --preset P, --batch B, --shape D,H,W   override the network, batch, detection volume

set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
DEVICE=cuda
STEPS=""
BUDGET=450
OUTFILE="${GPU_CHECK_OUT:-}"
PRESET="" BATCH="" SHAPE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUTFILE="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --preset) PRESET="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --shape) SHAPE="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$OUTFILE" ]; then
  if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then OUTFILE="$OUT/gpu_check.md"; else OUTFILE="$PWD/gpu_check.md"; fi
fi
if [ "$DEVICE" = cpu ]; then
  : "${STEPS:=2}" "${PRESET:=small}" "${BATCH:=16}" "${SHAPE:=4,240,240}"
  DDP_STEPS=2; DETECT_BATCH=20
else
  : "${STEPS:=200}" "${PRESET:=paper}" "${BATCH:=96}" "${SHAPE:=155,240,240}"
  DDP_STEPS=30; DETECT_BATCH=160
fi
mkdir -p "$(dirname "$OUTFILE")"
R="$(cd "$(dirname "$OUTFILE")" && pwd)/gpu_check_logs"
rm -rf "$R" && mkdir -p "$R"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
cd "$ROOT"

START=$(date +%s)
RESERVE=15   # kept for the table

# run_step NAME LIMIT CMD...: stdout -> R/NAME.json, stderr -> R/NAME.log, status -> R/NAME.status
run_step() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - ($(date +%s) - START) - RESERVE ))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 10 ]; then
    echo "125 0 0" > "$R/$name.status"
    echo "[gpu_check] $name: skipped (out of time budget)"
    return
  fi
  echo "[gpu_check] $name (limit ${limit} s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$R/$name.json" 2> "$R/$name.log"
  local rc=$?
  echo "$rc $(( $(date +%s) - t0 )) $limit" > "$R/$name.status"
  echo "[gpu_check] $name: exit $rc after $(( $(date +%s) - t0 )) s"
  if [ "$rc" -ne 0 ]; then tail -n 5 "$R/$name.log" | sed 's/^/    /'; fi
}

# 1. environment: versions, GPU, what precision=auto picks; fails early if imports fail
run_step env 60 "$PY" -c "
import json
import monai, nibabel, disyre
from benchmarks.speed.machine import machine_info
print(json.dumps(machine_info('$DEVICE')))"

# 2. the bf16/fp32 matmul peak of this device, measured now
run_step peak 60 "$PY" -c "
import json
from benchmarks.speed.machine import measure_peaks
print(json.dumps({'peaks': measure_peaks('$DEVICE')}))"

# 3. the CUDA-marked tests (they skip without CUDA)
run_step tests 150 "$PY" -m pytest -q -p no:cacheprovider -k cuda -rs \
  tests/test_runtime.py tests/test_model.py tests/corruption/test_corruption.py
if [ -f "$R/tests.json" ]; then
  cp "$R/tests.json" "$R/tests.out"
  SUMMARY=$(grep -E "passed|failed|skipped|error|no tests ran" "$R/tests.out" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
  printf '{"summary": "%s"}\n' "${SUMMARY:-no summary}" > "$R/tests.json"
  cat "$R/tests.out" >> "$R/tests.log"
fi

# 4. training benchmark, eager: bf16, channels-last, the whole batch in one micro-batch
run_step train_eager 150 "$PY" -m benchmarks.speed.bench_training --child --preset "$PRESET" \
  --batch "$BATCH" --precision bf16 --reps "$STEPS" --device "$DEVICE" --accum 1 \
  --compile off --channels-last on --no-breakdown

# 5. detection of one synthetic volume: 128 px windows (stride 32), then whole slices
DSPEC='{"net": "'$PRESET'", "method": "v2-5", "precision": "bf16", "batch": '$DETECT_BATCH', "slices": 0, "repeats": 1, "device": "'$DEVICE'", "threads": 0, "shape": ['$SHAPE'], "compile": false, "channels_last": "auto"'
run_step detect_windows 120 "$PY" -m benchmarks.speed.bench_detect --_child "$DSPEC, \"window\": 128}"
run_step detect_whole 90 "$PY" -m benchmarks.speed.bench_detect --_child "$DSPEC, \"window\": 0}"

# 6. DDP with 1 process through torchrun (NCCL on CUDA, gloo on the CPU)
run_step ddp 120 "$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node=1 \
  -m benchmarks.tools.gpu_check ddp --device "$DEVICE" --preset "$PRESET" --steps "$DDP_STEPS" \
  --json "$R/ddp.result.json"
if [ -f "$R/ddp.result.json" ]; then cp "$R/ddp.result.json" "$R/ddp.json"; fi

# 7. training benchmark, compiled (last: the compile may take minutes)
run_step train_compiled 240 "$PY" -m benchmarks.speed.bench_training --child --preset "$PRESET" \
  --batch "$BATCH" --precision bf16 --reps "$STEPS" --device "$DEVICE" --accum 1 \
  --compile on --channels-last on --no-breakdown

# 8. the table
echo
"$PY" -m benchmarks.tools.gpu_check table "$R" --out "$OUTFILE" --preset "$PRESET" --shape "$SHAPE"
echo "[gpu_check] done in $(( $(date +%s) - START )) s; logs in $R"
