"""``dreamrl compare``: agents x seeds on one env into one compare dir, with a table and a page.

    dreamrl compare --env ID --agents dreamer,actor_real,... --seeds K --steps N --out DIR
                    [--order agents|seeds] [--preset NAME ...] [--threshold R]
                    [--parallel P] [--threads T] [key=value ...]
    dreamrl compare --logdirs RUN_DIR ... --out DIR [--threshold R]

Rerunning the same command on the same ``--out`` trains only the runs not yet done; the
table is written again whenever a run ends. ``--dry-run`` lists the runs with how far each
got, training nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamrl.compare.runs import ORDERS
from dreamrl.config import ConfigError, parse_overrides
from dreamrl.presets import PRESETS


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "compare", help="train agents x seeds on one env and compare them (rerun to resume)"
    )
    p.add_argument("--env", help="the env every agent trains on (as dreamrl train --env)")
    p.add_argument(
        "--agents",
        default="dreamer",
        help="comma-separated agents: dreamer (no extra preset) or preset names, a+b stacking two "
        f"(the lesson's mistakes: actor_real, horizon50, horizon100, no_continue, kl_weak, kl_strong, "
        f"eval_distractors; presets: {', '.join(PRESETS)})",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per agent (0 .. K-1)")
    p.add_argument(
        "--order",
        choices=ORDERS,
        default="agents",
        help="train agent by agent (each agent's seeds in turn), or seed by seed (every agent's "
        "seed 0 first, so a comparison stopped halfway has a run of every agent)",
    )
    p.add_argument("--steps", type=float, help="env steps per run (run.steps)")
    p.add_argument(
        "--preset",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="presets every agent gets first",
    )
    p.add_argument("--out", required=True, type=Path, help="the compare dir (runs in OUT/<agent>/seed<k>)")
    p.add_argument("--threshold", type=float, help="return counted to (default: the env's registered one)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once, each a dreamrl train subprocess")
    p.add_argument("--threads", type=int, default=0, help="threads shared by parallel runs (0: every core)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replicates of every interval")
    p.add_argument(
        "--logdirs", nargs="+", type=Path, help="compare these existing run dirs instead of training"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar inside each run")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print every run of the comparison, in training order, with how far it got; train nothing",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.compare import JSON_NAME, PAGE_NAME, compare, compare_logdirs, describe

    presets = [p for p in args.preset if "=" not in p]
    overrides = parse_overrides([p for p in args.preset if "=" in p] + list(args.overrides))
    if args.reps < 1:
        raise ConfigError(f"--reps: {args.reps} is not a positive number of replicates")
    if args.logdirs:
        if args.env or presets or overrides or args.steps is not None:
            raise ConfigError(
                "--logdirs compares existing runs: --env, --steps, --preset and overrides do not apply"
            )
        if args.dry_run:
            raise ConfigError("--dry-run shows the runs a comparison would train; --logdirs trains none")
        summary = compare_logdirs(args.logdirs, args.out, args.threshold, args.reps)
    else:
        if not args.env:
            raise ConfigError("--env: name the env to compare on (or --logdirs to compare existing runs)")
        if args.parallel < 1:
            raise ConfigError(f"--parallel: {args.parallel} is not a positive number of runs")
        agents = [a.strip() for a in args.agents.split(",") if a.strip()]
        steps = int(args.steps) if args.steps is not None else None
        if args.dry_run:
            from dreamrl.compare.runs import describe_plan, plan

            specs = plan(args.out, args.env, agents, args.seeds, steps, presets, overrides, args.order)
            for line in describe_plan(specs):
                print(line)
            return 0
        summary = compare(
            args.out,
            args.env,
            agents,
            args.seeds,
            steps,
            presets,
            overrides,
            args.threshold,
            args.parallel,
            args.threads,
            progress=not args.no_progress,
            reps=args.reps,
            order=args.order,
        )
    for line in describe(summary):
        print(line)
    print(f"Written: {args.out / JSON_NAME} and {args.out / PAGE_NAME}")
    failed = summary.get("failed") or []
    for f in failed:
        print(f"error: {f['agent']} seed {f['seed']} failed: {f['reason']} (rerun to retry it)")
    return 1 if failed else 0
