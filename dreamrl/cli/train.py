"""``dreamrl train``: train an agent into a run dir; rerunning it resumes the run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dreamrl import config as cfglib
from dreamrl.cli.common import config_args, resolve, set_threads
from dreamrl.config import Config
from dreamrl.presets import DEMO_RESULT, SIZE_NAMES
from dreamrl.rundir import RunDir


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("train", help="train an agent (rerun to resume)")
    p.add_argument("--logdir", required=True, type=Path, help="run directory")
    p.add_argument(
        "--dataset",
        metavar="ID_OR_PATH",
        help="learn from a Minari dataset (id or directory) or a dreamrl run dir's replay first, "
        "for run.updates updates with no env step; with --env, then go on online (docs/offline.md)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.agents import trainer_for
    from dreamrl.diagnostics.hook import training_hooks
    from dreamrl.run.resume import check_config

    saved = None
    saved_path = RunDir(args.logdir).config
    if saved_path.exists():
        saved = cfglib.from_dict(json.loads(saved_path.read_text()))
    if args.dataset:
        args.overrides = [f"offline.dataset={args.dataset}", *args.overrides]
        if args.env and not any(o.startswith("offline.finetune=") for o in args.overrides):
            args.overrides.append("offline.finetune=true")
    config = resolve(args, saved)
    check_config(args.logdir, config)
    for warning in cfglib.warnings_for(config):
        print(f"warning: {warning}", file=sys.stderr)
    set_threads(config)
    auto = [p for p in config.presets if p in SIZE_NAMES and p not in args.preset]
    if auto and saved is None:
        for line in explain_choices(config, auto[0]):
            print(line)
    train = trainer_for(config)
    if config.offline.dataset:  # a dataset comes first, whatever follows online
        from dreamrl.run.offline import trainer_for_dataset

        train = trainer_for_dataset(config)
    train(config, args.logdir, hooks=training_hooks(config, args.logdir), progress=not args.no_progress)
    return 0


def explain_choices(config: Config, size: str) -> list[str]:
    """What dreamrl chose for a user who named no size, and what that means on this
    machine: the size, the learning rate and train ratio it implies, the step budget, and
    the faster preset the demo uses."""
    from dreamrl.devices import resolve_device

    paper = Config()
    device = resolve_device(config.compute.device).type
    lines = [
        f"No size preset given: using {size} for this {device} (--preset size12m ... size400m to choose)."
    ]
    if config.agent.opt.lr == paper.agent.opt.lr:
        lines.append(
            f"It trains at the paper's learning rate ({paper.agent.opt.lr:g}) and train ratio "
            f"{config.run.train_ratio:g}. That rate is made for long GPU runs: on CartPole-v1 it "
            "moved the reward loss only from 5.54 to 4.82 in 436 updates, where 3e-4 reached 3.86 "
            "in 236 (docs/learning.md), so a task like CartPole takes hours here. "
            f"For a first result in minutes, --preset demo {DEMO_RESULT}."
        )
    if config.run.steps == paper.run.steps:
        lines.append(f"run.steps is {config.run.steps:,} (until stopped): --steps N ends the run sooner.")
    return lines
