"""Acting by planning (agent.act=mpc) against acting with the actor: its cost, and its return.

    python benchmarks/planning.py latency [key=value ...] [--envs 1 4] [--calls 10] [--preset size1m]
        [--planners mppi cem shooting]
    python benchmarks/planning.py curve RUN_DIR [RUN_DIR ...] [--points 6] [--episodes 10]
        [--envs 4] [--out FILE, default: planning_curve.json in the first run dir]

``latency`` times ``agent.policy`` at ``size1m`` (or the presets given) for one step of
``--envs`` envs at once, planning with the planners' defaults (TD-MPC2's MPPI and PlaNet's
CEM on Pendulum-v1, shooting over the actor's sequences on CartPole-v1) and with the
actor, in collection mode (``deterministic=False``) and evaluation mode. It prints wall
and CPU milliseconds per call, env steps acted per second, the matrix-product GFLOP of a
planned step and the load average beside each figure (other processes slow the wall time
down; the CPU time far less, and "per cpu-s" is env steps planned per CPU second). The
weights are untrained: what a call costs does not depend on them.

``curve`` evaluates every run dir's checkpoints (``--points`` of them, evenly spread,
the last included) twice with ``dreamrl eval``'s own protocol, fresh seeds and the
deterministic policy: once with the actor, once planning (``--act mpc``, with the run's
``agent.mpc.*``: MPPI by default). It prints a table per run (env step, actor return,
MPC return, wall milliseconds per env step of each evaluation, the planner's latency per
call and its planned against received rewards over the horizon), the mean over runs per
checkpoint index, and writes it all as JSON to ``--out``. Each evaluation
is also saved in its run dir (``eval/eval-<step>.json`` and ``eval-<step>-mpc.json``).
Runs to feed it keep many checkpoints: ``run.keep_checkpoints=1000 run.save_every=240``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from dreamrl.agents.base import policy_metrics
from dreamrl.agents.dreamer import DreamerAgent
from dreamrl.cli import main as dreamrl_main
from dreamrl.cli.common import set_threads
from dreamrl.config import Config, build_config, parse_overrides
from dreamrl.envs import make_env
from dreamrl.flops import counted
from dreamrl.run.allocator import exec_with_jemalloc, tune_allocator
from dreamrl.run.checkpoint import list_checkpoints

# (label, env, presets after the size): the planners' defaults, one per kind of action.
CASES = (
    ("mppi", "Pendulum-v1", ("mpc",)),
    ("cem", "Pendulum-v1", ("mpc_cem",)),
    ("shooting", "CartPole-v1", ("mpc",)),
)


# ----------------------------------------------------------------------------- latency


class Timing(NamedTuple):
    """One policy call's cost: medians over the timed calls."""

    wall: float  # seconds
    cpu: float  # CPU seconds of this process, all its threads


def policy_timing(agent: DreamerAgent, envs: int, calls: int, deterministic: bool, seed: int = 0) -> Timing:
    """Median cost of one ``agent.policy`` call for ``envs`` envs, on random vector
    observations, after two calls of warm-up (compiling, the first plan).

    Wall time is what a user waits; CPU time is what the call consumed, which other
    processes on the machine inflate far less (with one torch thread it is about the
    wall time the call would take on an idle core)."""
    rng = np.random.default_rng(seed)

    def obs(first: bool) -> dict[str, np.ndarray]:
        out = {k: rng.normal(size=(envs, *s.shape)).astype(np.float32) for k, s in agent.obs_space.items()}
        out["is_first"] = np.full(envs, first)
        out["reward"] = rng.normal(size=envs).astype(np.float32)
        return out

    state = None
    for i in range(2):
        state = agent.policy(obs(i == 0), state, deterministic)[1]
    walls, cpus = [], []
    for _ in range(calls):
        step = obs(False)
        wall, cpu = time.perf_counter(), time.process_time()
        state = agent.policy(step, state, deterministic)[1]
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), statistics.median(cpus))


def policy_gflop(agent: DreamerAgent, envs: int) -> float:
    """Matrix-product GFLOP of one policy call for ``envs`` envs (torch's FLOP counter)."""
    obs = {k: np.zeros((envs, *s.shape), np.float32) for k, s in agent.obs_space.items()}
    obs["is_first"] = np.ones(envs, bool)
    _, flop = counted(lambda: agent.policy(obs, None, False))
    return flop / 1e9


def build_agent(config: Config) -> DreamerAgent:
    env = make_env(config, 0)
    try:
        return DreamerAgent(config, env.obs_space, env.act_space, obs_converter=env.obs_converter)
    finally:
        env.close()


def latency(
    size: list[str], env_counts: list[int], calls: int, overrides: dict[str, str], planners: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for label, task, presets in (c for c in CASES if c[0] in planners):
        config = build_config([*size, *presets], {**overrides, "task": task})
        set_threads(config)
        planner = build_agent(config)
        actor = build_agent(build_config([*size], {**overrides, "task": task}))
        mpc = config.agent.mpc
        # Counted on an eager twin: the FLOP counter does not see inside compiled graphs.
        eager = {**overrides, "task": task, "compute.compile": "false"}
        gflop = policy_gflop(build_agent(build_config([*size, *presets], eager)), 1)
        actor_gflop = policy_gflop(build_agent(build_config([*size], eager)), 1)
        print(
            f"\n{label} on {task} ({' '.join(size)}; horizon {mpc.horizon}, {mpc.iterations} iterations, "
            f"{mpc.samples} samples, {mpc.elites} elites; {torch.get_num_threads()} torch threads; "
            f"compute.compile={config.compute.compile}, {config.compute.precision}); {gflop:.2f} GFLOP of "
            f"matrix products a "
            f"planned env step (the actor's: {actor_gflop * 1000:.2f} MFLOP)",
            flush=True,
        )
        print(
            f"{'envs':>4}  {'mode':>10}  {'mpc ms/call':>11}  {'cpu ms':>7}  {'mpc steps/s':>11}  "
            f"{'per cpu-s':>9}  "
            f"{'actor ms/call':>13}  {'actor steps/s':>13}  {'load':>5}"
        )
        # CEM is deterministic: collection and evaluation plan alike.
        modes = (False,) if label == "cem" else (False, True)
        for envs in env_counts:
            for deterministic in modes:
                plan = policy_timing(planner, envs, calls, deterministic)
                act = policy_timing(actor, envs, max(calls, 20), deterministic)
                policy_metrics(planner)  # drained: the latency table is timed here
                row = {
                    "planner": label,
                    "task": task,
                    "presets": [*size, *presets],
                    "envs": envs,
                    "deterministic": deterministic,
                    "mpc_ms_per_call": 1000 * plan.wall,
                    "mpc_cpu_ms_per_call": 1000 * plan.cpu,
                    "mpc_steps_per_s": envs / plan.wall,
                    "mpc_steps_per_cpu_s": envs / plan.cpu,
                    "mpc_gflop_per_step": gflop,
                    "actor_ms_per_call": 1000 * act.wall,
                    "actor_steps_per_s": envs / act.wall,
                    "threads": torch.get_num_threads(),
                    "load": os.getloadavg()[0],  # other processes' share of the cores
                }
                rows.append(row)
                print(
                    f"{envs:>4}  {'evaluation' if deterministic else 'collection':>10}  "
                    f"{row['mpc_ms_per_call']:>11.1f}  {row['mpc_cpu_ms_per_call']:>7.0f}  "
                    f"{row['mpc_steps_per_s']:>11.1f}  {row['mpc_steps_per_cpu_s']:>9.1f}  "
                    f"{row['actor_ms_per_call']:>13.2f}  "
                    f"{row['actor_steps_per_s']:>13.0f}  {row['load']:>5.1f}",
                    flush=True,
                )
    return rows


# ----------------------------------------------------------------------------- curve


def spread(steps: list[int], points: int) -> list[int]:
    """``points`` of ``steps`` (sorted), evenly spread over them, the last always in."""
    if points <= 0 or len(steps) <= points:
        return list(steps)
    picks = np.linspace(0, len(steps) - 1, points).round().astype(int)
    return [steps[i] for i in sorted(set(picks.tolist()))]


def eval_json(run_dir: Path, step: int, episodes: int, envs: int, act: str) -> dict[str, Any]:
    """``dreamrl eval --checkpoint STEP --act ACT --json`` on ``run_dir``: its summary,
    with ``wall_s`` (seconds the evaluation took)."""
    argv = ["eval", "--logdir", str(run_dir), "--checkpoint", str(step), "--act", act]
    argv += ["--episodes", str(episodes), "--envs", str(envs), "--json"]
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        status = dreamrl_main(argv)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"dreamrl {' '.join(argv)} exited with {status}:\n{out.getvalue()}")
    summary: dict[str, Any] = json.loads(out.getvalue().strip().splitlines()[-1])
    summary["wall_s"] = wall
    return summary


def curve_point(run_dir: Path, step: int, episodes: int, envs: int) -> dict[str, Any]:
    actor = eval_json(run_dir, step, episodes, envs, "actor")
    mpc = eval_json(run_dir, step, episodes, envs, "mpc")
    point = {
        "step": step,
        "actor_return": actor["mean_return"],
        "actor_std": actor["std_return"],
        "mpc_return": mpc["mean_return"],
        "mpc_std": mpc["std_return"],
        "actor_ms_per_step": 1000 * actor["wall_s"] / max(1, sum(actor["lengths"])),
        "mpc_ms_per_step": 1000 * mpc["wall_s"] / max(1, sum(mpc["lengths"])),
        "actor_returns": actor["returns"],
        "mpc_returns": mpc["returns"],
    }
    point.update({k: v for k, v in mpc.items() if k.startswith("mpc/")})
    return point


def print_points(title: str, points: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    print(
        f"{'env step':>9}  {'actor return':>12}  {'mpc return':>10}  {'actor ms/step':>13}  "
        f"{'mpc ms/step':>11}  {'plan ms/call':>12}  {'planned':>8}  {'received':>8}"
    )
    for p in points:
        planned, received = (
            p.get("mpc/horizon_planned", float("nan")),
            p.get("mpc/horizon_received", float("nan")),
        )
        print(
            f"{p['step']:>9,}  {p['actor_return']:>12.1f}  {p['mpc_return']:>10.1f}  "
            f"{p['actor_ms_per_step']:>13.2f}  "
            f"{p['mpc_ms_per_step']:>11.1f}  {p.get('mpc/ms_per_call', float('nan')):>12.1f}  "
            f"{planned:>8.3g}  {received:>8.3g}",
            flush=True,
        )


def mean_over_runs(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per checkpoint index, the mean over runs of each figure (runs cut to the shortest)."""
    if not runs:
        return []
    n = min(len(points) for points in runs.values())
    keys = ["step", "actor_return", "mpc_return", "actor_ms_per_step", "mpc_ms_per_step", "mpc/ms_per_call"]
    keys += ["mpc/horizon_planned", "mpc/horizon_received"]
    out = []
    for i in range(n):
        rows = [points[i] for points in runs.values()]
        out.append({k: float(np.mean([r.get(k, np.nan) for r in rows])) for k in keys})
    return out


def curve(run_dirs: list[Path], points: int, episodes: int, envs: int) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for run_dir in run_dirs:
        steps = spread([s for s, _ in list_checkpoints(run_dir)], points)
        if not steps:
            raise SystemExit(f"{run_dir}: no checkpoints")
        print(f"{run_dir}: {len(steps)} checkpoints, at {', '.join(f'{s:,}' for s in steps)}", flush=True)
        runs[str(run_dir)] = [curve_point(run_dir, step, episodes, envs) for step in steps]
        print_points(f"{run_dir} ({episodes} episodes a point)", runs[str(run_dir)])
    if len(runs) > 1:
        mean = mean_over_runs(runs)
        print_points(f"mean over {len(runs)} runs (env step: their mean)", mean)
    return runs


def write_curve(path: Path, runs: dict[str, list[dict[str, Any]]], episodes: int) -> None:
    """The curve as JSON: ``{"runs": {run dir: points}, "mean": points, "episodes": n}``."""
    result = {"runs": runs, "mean": mean_over_runs(runs) if len(runs) > 1 else [], "episodes": episodes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))


def main() -> int:
    exec_with_jemalloc()  # as the dreamrl command does
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    lat = sub.add_parser("latency", help="ms per policy call, planner against actor")
    lat.add_argument("--envs", type=int, nargs="+", default=[1, 4])
    lat.add_argument("--calls", type=int, default=10, help="timed calls per figure (the median is printed)")
    lat.add_argument("--preset", nargs="+", default=["size1m"], help="presets before the planner's")
    lat.add_argument("--out", type=Path, help="also write the rows as JSON here")
    lat.add_argument("--planners", nargs="+", choices=[c[0] for c in CASES], default=[c[0] for c in CASES])
    lat.add_argument("overrides", nargs="*", metavar="key=value")
    cur = sub.add_parser("curve", help="actor against MPC return from each checkpoint of run dirs")
    cur.add_argument("runs", nargs="+", type=Path)
    cur.add_argument("--points", type=int, default=6, help="checkpoints per run, evenly spread (0: all)")
    cur.add_argument("--episodes", type=int, default=10)
    cur.add_argument("--envs", type=int, default=4)
    cur.add_argument("--out", type=Path, help="JSON out (default: RUN/planning_curve.json)")
    args = parser.parse_args()
    tune_allocator()
    if args.mode == "latency":
        rows = latency(args.preset, args.envs, args.calls, parse_overrides(args.overrides), args.planners)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))
        return 0
    runs = curve(args.runs, args.points, args.episodes, args.envs)
    out = args.out if args.out is not None else args.runs[0] / "planning_curve.json"
    write_curve(out, runs, args.episodes)
    print(f"\nWrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
