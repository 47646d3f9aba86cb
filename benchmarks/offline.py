"""Offline training on CartPole-v1: a Minari dataset of a trained dreamrl agent's episodes
mixed with a random policy's, eval return against updates, then online fine-tuning of the
offline agent against a run from scratch at equal env steps.

    python benchmarks/offline.py                         # every stage (about 40 minutes on 2 cores)
    python benchmarks/offline.py --out runs/bench-offline --updates 2000 --finetune-steps 1000

Stages, each in ``<out>/`` and each skipped or resumed when its output is there already:

1. ``expert/``: the ``demo`` preset trained on CartPole-v1 for ``--expert-steps`` env steps
   (docs/learning.md: a return of 500 in 2,500 steps);
2. ``minari/cartpole/mixed-v0``: a Minari dataset recorded with minari's ``DataCollector``:
   ``--expert-episodes`` episodes of that agent's deterministic policy and
   ``--random-episodes`` of uniformly random actions;
3. ``offline/``: ``dreamrl train --dataset`` with the ``demo`` preset for ``--updates``
   updates, evaluated on 10 fresh episodes every ``--eval-every`` updates;
4. ``finetune/`` (a copy of ``offline/`` going on online, the dataset kept in replay) and
   ``scratch/`` (the ``demo`` preset from nothing), ``--finetune-steps`` env steps each,
   evaluated at the same env steps.

It prints each curve and writes them to ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dreamrl.config import Config, build_config
from dreamrl.run.allocator import exec_with_jemalloc, tune_allocator
from dreamrl.run.logging import read_metrics
from dreamrl.run.offline import train_offline
from dreamrl.run.train import train

ENV = "CartPole-v1"
DATASET = "cartpole/mixed-v0"
EVAL = {"run.eval_eps": 10, "run.log_every": 60, "run.diagnose": False}


def demo(**overrides: Any) -> Config:
    return build_config(["demo"], {"task": ENV, **EVAL, **overrides})


def train_expert(out: Path, steps: int) -> Path:
    run_dir = out / "expert"
    train(demo(**{"run.steps": steps}), run_dir, progress=False)
    return run_dir


def record(out: Path, expert_dir: Path, expert_episodes: int, random_episodes: int) -> dict[str, Any]:
    """Record the mixed dataset (once); the returns of each kind of episode."""
    import gymnasium
    import minari

    from dreamrl import Agent

    path = out / "minari" / DATASET
    summary_path = out / "dataset.json"
    if path.is_dir() and summary_path.is_file():
        return dict(json.loads(summary_path.read_text()))
    agent = Agent.load(expert_dir)
    env = minari.DataCollector(gymnasium.make(ENV))
    rng = np.random.default_rng(0)
    returns: dict[str, list[float]] = {"expert": [], "random": []}
    kinds = ["expert"] * expert_episodes + ["random"] * random_episodes
    for episode, kind in enumerate(kinds):
        obs, _ = env.reset(seed=10_000 + episode)
        state = None
        total, done = 0.0, False
        while not done:
            if kind == "expert":
                action, state = agent.act(obs, state, deterministic=True)
            else:
                action = int(rng.integers(env.action_space.n))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns[kind].append(total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari's advice on metadata for a published dataset
        dataset = env.create_dataset(
            DATASET, algorithm_name="dreamrl demo agent + uniform random", author="dreamrl"
        )
    env.close()
    summary = {
        "episodes": {k: len(v) for k, v in returns.items()},
        "mean_return": {k: float(np.mean(v)) for k, v in returns.items()},
        "steps": int(dataset.total_steps),
    }
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def eval_curve(run_dir: Path, by: str) -> list[tuple[int, float]]:
    """(updates or env steps, eval return) of every evaluation logged in ``run_dir``."""
    points = []
    for r in read_metrics(run_dir):
        if "eval/return" in r and r["eval/return"] is not None:
            x = r["train/updates"] if by == "updates" else r["step"]
            points.append((int(x), float(r["eval/return"])))
    return points


def offline_config(dataset: Path, updates: int, eval_every: int, **overrides: Any) -> Config:
    base = {"offline.dataset": str(dataset), "run.updates": updates, "offline.eval_every": eval_every}
    return demo(**base, **overrides)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-offline"))
    parser.add_argument("--expert-steps", type=int, default=2_500)
    parser.add_argument("--expert-episodes", type=int, default=20)
    parser.add_argument("--random-episodes", type=int, default=20)
    parser.add_argument("--updates", type=int, default=3_000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--finetune-steps", type=int, default=1_500)
    args = parser.parse_args()
    exec_with_jemalloc()
    tune_allocator()
    out = args.out.resolve()
    os.environ["MINARI_DATASETS_PATH"] = str(out / "minari")  # the dataset stays under --out

    expert = train_expert(out, args.expert_steps)
    print(f"expert: eval returns {eval_curve(expert, 'steps')}", flush=True)
    data = record(out, expert, args.expert_episodes, args.random_episodes)
    print(f"dataset {DATASET}: {data}", flush=True)

    dataset = out / "minari" / DATASET
    offline_dir = out / "offline"
    train_offline(offline_config(dataset, args.updates, args.eval_every), offline_dir, progress=False)
    curve = eval_curve(offline_dir, "updates")
    print("offline: updates -> eval return (10 episodes)")
    for updates, ret in curve:
        print(f"  {updates:6,d}  {ret:6.1f}")

    every = max(1, args.finetune_steps // 3)
    online = {"run.steps": args.finetune_steps, "run.eval_every": every}
    finetune_dir = out / "finetune"
    if not finetune_dir.exists():
        shutil.copytree(offline_dir, finetune_dir)
    cfg = offline_config(dataset, args.updates, args.eval_every, **online, **{"offline.finetune": True})
    train_offline(cfg, finetune_dir, progress=False)
    scratch_dir = out / "scratch"
    train(demo(**online), scratch_dir, progress=False)
    tuned = dict(eval_curve(finetune_dir, "steps"))
    scratch = dict(eval_curve(scratch_dir, "steps"))
    print("online: env steps -> eval return (10 episodes): fine-tuned from offline | from scratch")
    for step in sorted(set(tuned) | set(scratch)):
        print(f"  {step:6,d}  {tuned.get(step, float('nan')):6.1f}  {scratch.get(step, float('nan')):6.1f}")

    summary = {
        "dataset": data,
        "offline": curve,
        "finetune": sorted(tuned.items()),
        "scratch": sorted(scratch.items()),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
