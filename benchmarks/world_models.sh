#!/bin/bash
# The learning comparison of world models (docs/world_models.md): CartPole-v1 from 64x64
# pixels with the demo's settings, each world model, seeds 0 and 1, one run after another.
# Rerunning resumes unfinished runs; a run that has held the target stops at once.
#   benchmarks/world_models.sh [out dir, default runs/wm]
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/wm}
mkdir -p "$out"
for seed in 0 1; do
  for wm in decoderfree pixel rssm; do
    .venv/bin/python benchmarks/learning.py cartpole_pixels_demo --out "$out/$wm-s$seed" \
      --preset "wm_$wm" "seed=$seed" >> "$out/$wm-s$seed.log" 2>&1
    tail -n 12 "$out/$wm-s$seed.log"
  done
done
