#!/bin/bash
# The learning comparison of world models (docs/world_models.md): CartPole-v1 from 64x64
# pixels with the demo's settings, each world model, seeds 0 and 1, one run after another.
# Rerunning resumes unfinished runs; a run that has held the target stops at once. A
# checkpoint every 4 minutes is kept, so the same runs give actor-against-planner curves
# (benchmarks/planning.py, docs/planning.md).
#   benchmarks/world_models.sh [out dir, default runs/wm]
# Some runs only, in this order (model:seed words):
#   RUNS="pixel:0 rssm:1" benchmarks/world_models.sh
# The pixel predictor's runs end at PIXEL_STEPS env steps (12,500 by default): it learns
# slowest and costs most (seed 0 had 89.5 there): 12,500 took 95 min on the faster 2-core
# machine, and at the 0.56 env steps a second seed 1 made on the slower one, about 6 h.
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/wm}
runs=${RUNS:-rssm:0 decoderfree:0 pixel:0 rssm:1 decoderfree:1 pixel:1}
mkdir -p "$out"
for run in $runs; do
  wm=${run%:*} seed=${run#*:}
  steps=()
  [ "$wm" = pixel ] && steps=("run.steps=${PIXEL_STEPS:-12500}")
  .venv/bin/python benchmarks/learning.py cartpole_pixels_demo --out "$out/$wm-s$seed" \
    --preset "wm_$wm" "seed=$seed" run.save_every=240 run.keep_checkpoints=1000 "${steps[@]}" >> "$out/$wm-s$seed.log" 2>&1
  tail -n 12 "$out/$wm-s$seed.log"
done
