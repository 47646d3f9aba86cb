#!/bin/bash
# The comparison of docs/compare.md: CartPole-v1 from vectors and from 64x64 pixels with the
# demo's settings; Dreamer, the model-free baselines PPO and DQN, and the lesson's mistakes;
# 3 seeds each, one run after another, every agent's seed 0 first (ORDER=agents for
# agent by agent). Hours on a 2-core CPU. Rerunning resumes what is unfinished and skips
# what is done; OUT/<obs>/compare.json holds the table of the runs so far after every run.
#   benchmarks/compare.sh [out dir, default runs/compare]
# Smaller or other runs through the environment, e.g. a smoke test of a few minutes:
#   AGENTS=dreamer,actor_real SEEDS=1 STEPS=300 EXTRA="run.eval_every=150 run.eval_eps=2" benchmarks/compare.sh /tmp/cmp
# and one half alone: OBS=pixels benchmarks/compare.sh (OBS: "vectors pixels" by default).
set -u
cd "$(dirname "$0")/.."
out=${1:-runs/compare}
agents=${AGENTS:-dreamer,ppo,dqn,actor_real,horizon50,no_continue,kl_weak,kl_strong}
seeds=${SEEDS:-3}
steps=${STEPS:-2500}
extra=${EXTRA:-}
bin=${DREAMRL:-.venv/bin/dreamrl}
# shellcheck disable=SC2086  # OBS is a list of words
for obs in ${OBS:-vectors pixels}; do
  pixels=false stack=1
  # From pixels one frame shows no velocity: the model-free baselines, which have no memory,
  # see the last 4 frames stacked (as RL Zoo gives them on Atari); Dreamer ignores the key.
  [ "$obs" = pixels ] && pixels=true stack=4
  # shellcheck disable=SC2086  # EXTRA is a list of key=value words; DREAMRL may be "python -m dreamrl"
  $bin compare --env CartPole-v1 --agents "$agents" --seeds "$seeds" --steps "$steps" --order "${ORDER:-seeds}" \
    --preset demo --out "$out/$obs" --no-progress "env.pixels=$pixels" "agent.baseline.frame_stack=$stack" $extra
done
