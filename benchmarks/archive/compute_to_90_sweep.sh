#!/usr/bin/env bash
# Every lever of compute_to_90.py on two seeds (caption draw 1), plus the stage-0 recipe's U-Net (width 32, depth 1-1-1) on draw 0, as parallel
# processes on one CUDA GPU. Steps and TFLOP to 90% do not depend on the machine, so a GPU only makes the
# sweep fast (one process per run, one CPU thread each). Then: python benchmarks/archive/compute_to_90.py table
#   bash benchmarks/archive/compute_to_90_sweep.sh [parallel processes, default 3] [max TFLOP, default 52]
# Measured on one H200 (2026-12-04, 16 host cores): 16 processes at once ran 1.6 steps/s each (the GPU time-shared
# between 16 contexts, load average 41: 26 steps/s in all), 3 at once 7.3 steps/s each (22 in all); so few at once.
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} MINIMAGEN_TEXT_ENCODER=${MINIMAGEN_TEXT_ENCODER:-tiny} HF_HUB_OFFLINE=1
P=${1:-3}; MAX=${2:-52}
jobs=$(python3 - <<'PY'
import sys; sys.path[:0] = ["benchmarks/archive", "benchmarks"]
from compute_to_90 import LEVERS, SHAPES, BASE
from minimagen.unet import PRESETS
# the slowest runs (most steps: the smallest U-Nets) first
order = sorted(LEVERS, key=lambda l: -({**PRESETS, **SHAPES}[LEVERS[l]["preset"]].dim < BASE.dim))
for seed in (0, 1):
    for lever in order:
        print(f"{lever}\t{seed}\t1")
for seed in (0, 1):
    print(f"width 32, depth 1-1-1\t{seed}\t0")
PY
)
echo "$jobs" | tr '\t' '|' | xargs -P "$P" -I{} bash -c '
  IFS="|" read -r lever seed draw <<< "{}"
  python3 benchmarks/archive/compute_to_90.py run --lever "$lever" --seed "$seed" --draw "$draw" --max-tflop '"$MAX"' \
      --threads 1 > "runs/compute_to_90/log_${seed}_${draw}_${lever// /_}.txt" 2>&1 && echo "done: $lever seed $seed draw $draw"'
