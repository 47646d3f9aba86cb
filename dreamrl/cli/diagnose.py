"""``dreamrl diagnose``: world-model diagnostics of a run's newest checkpoint on fresh
episodes, written into the run dir's ``diagnostics/`` where ``dreamrl report`` finds them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dreamrl.cli.common import load_world_model_agent, output_run_dir
from dreamrl.rundir import diagnosis_name


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "diagnose", help="world-model diagnostics on fresh episodes"
    )
    p.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    p.add_argument("--episodes", type=int, default=8, help="episodes to record")
    p.add_argument("--context", type=int, default=16, help="steps observed before imagining")
    p.add_argument("--horizon", type=int, default=15, help="steps imagined")
    p.add_argument("--sequences", type=int, default=32, help="windows cut from the episodes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="where to write (default: the run dir's diagnostics/)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.diagnostics import run_diagnostics
    from dreamrl.diagnostics.record import diagnostic_seeds, record_episodes

    agent, _, env_steps = load_world_model_agent(args.logdir)
    out = Path(args.out) if args.out is not None else output_run_dir(args.logdir).diagnostics
    result = record_episodes(agent, diagnostic_seeds(agent.config.seed, args.seed, args.episodes))
    step = env_steps or 0
    d = run_diagnostics(
        agent, result.episodes, out, step, args.context, args.horizon, args.sequences, args.seed
    )
    if d is None:
        longest = max(result.lengths)
        print(
            f"error: no episode holds {args.context + args.horizon} steps (the longest has {longest}); "
            "lower --context or --horizon"
        )
        return 1
    print(
        f"{agent.config.task}, checkpoint at {step:,} env steps, {d['sequences']} windows of "
        f"{args.context} observed + {args.horizon} imagined steps from {args.episodes} fresh episodes:"
    )
    h = d["horizon"]
    print(f"  reward error  h=1 {d['reward_error'][0]:.4g}  h={h} {d['reward_error'][-1]:.4g}")
    if "kl" in d:  # latent models only
        print(f"  KL real||imag h=1 {d['kl'][0]:.3f}  h={h} {d['kl'][-1]:.3f} nats")
    if "drift" in d:
        print(f"  drift         h=1 {d['drift'][0]:.3f}  h={h} {d['drift'][-1]:.3f}")
    for key, errors in d["obs_error"].items():
        label = f"{key} error" + (" (probe)" if d.get("probe") else "")
        print(f"  {label:<13} h=1 {errors[0]:.3f}  h={h} {errors[-1]:.3f} of variance")
    gap = d.get("fantasy_gap")
    if gap:
        print(
            f"  fantasy gap   imagined λ-return minus the discounted return that followed, "
            f"from {gap['starts']} states (real {gap['real']:.4g}):"
        )
        for h, imagined, g in zip(gap["horizons"], gap["imagined"], gap["gap"]):
            print(f"                H={h:<4} imagined {imagined:.4g}  gap {g:+.4g}")
    print(f"  {d['summary']}")
    print(f"Written: {out / diagnosis_name(step)} and {out / d['images']['openloop']}")
    if args.json:
        print(json.dumps(d))
    return 0
