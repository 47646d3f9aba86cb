#!/bin/bash
# A check that each model-free baseline learns through dreamrl's env adapters and is scored
# by dreamrl's evaluation (docs/baselines.md): PPO and DQN on CartPole-v1 (50,000 env steps),
# SAC on Pendulum-v1 (6,000), with RL Zoo's settings, 10 evaluation episodes every 10,000
# (SAC: 2,000) env steps, one torch thread. Prints each evaluation and the run's summary.
# Rerunning resumes unfinished runs.
#   benchmarks/baselines.sh [out dir, default runs/baselines]
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/baselines}
mkdir -p "$out"
run() {  # name, then the rest of the train command
  local name=$1
  shift
  .venv/bin/dreamrl train --logdir "$out/$name" --no-progress compute.threads=1 "$@" >> "$out/$name.log" 2>&1
  echo "== $name"
  grep -E "^(eval at|Done)" "$out/$name.log"
}
run ppo-cartpole --env CartPole-v1 --preset ppo --steps 50000 run.eval_every=10000
run dqn-cartpole --env CartPole-v1 --preset dqn --steps 50000 run.eval_every=10000
run sac-pendulum --env Pendulum-v1 --preset sac --steps 6000 run.eval_every=2000
