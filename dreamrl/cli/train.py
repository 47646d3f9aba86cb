"""``dreamrl train``: train an agent into a run dir; rerunning it resumes the run."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from dreamrl import config as cfglib
from dreamrl.cli.common import config_args, resolve, set_threads
from dreamrl.config import Config, ConfigError
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
    p.add_argument(
        "--ranks",
        type=int,
        metavar="N",
        help="train data-parallel in N processes of this machine (started by torchrun; docs/distributed.md)",
    )
    config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.envs import check_task

    if args.env:  # before torch is imported (to build the config): a mistyped id is refused at once
        check_task(args.env)
    from dreamrl.agents import trainer_for
    from dreamrl.run.job import launched_ranks
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
    ranks = job_ranks(args.ranks, launched_ranks())
    check_run_ranks(args.logdir, ranks)
    if ranks > 1 and launched_ranks() == 1:  # start the job's processes; each comes back here
        from dreamrl.run.launch import launch

        return launch(ranks, args.argv)
    first = int(os.environ.get("RANK", "0")) == 0
    if first:
        for warning in cfglib.warnings_for(config):
            print(f"warning: {warning}", file=sys.stderr)
    set_threads(config)
    auto = [p for p in config.presets if p in SIZE_NAMES and p not in args.preset]
    if auto and saved is None and first:
        for line in explain_choices(config, auto[0]):
            print(line)
    train = trainer_for(config)
    if config.offline.dataset:  # a dataset comes first, whatever follows online
        from dreamrl.run.offline import trainer_for_dataset

        train = trainer_for_dataset(config)
    if ranks == 1:
        train(config, args.logdir, hooks=_hooks(config, args.logdir), progress=not args.no_progress)
        return 0
    if "ranks" not in inspect.signature(train).parameters:
        what = "training from a dataset" if config.offline.dataset else f"agent.kind={config.agent.kind!r}"
        raise ConfigError(f"{what} trains in one process only; --ranks {ranks} needs dreamer's online loop")
    _train_as_rank(train, config, args)
    return 0


def _hooks(config: Config, logdir: Path) -> Any:
    from dreamrl.diagnostics.hook import training_hooks

    return training_hooks(config, logdir)


def _train_as_rank(train: Any, config: Config, args: argparse.Namespace) -> None:
    """One rank's part of a data-parallel job; only rank 0 prints more than its errors."""
    from dreamrl.run.distributed import joined
    from dreamrl.run.launch import recorded_errors

    with recorded_errors(), joined(config) as ranks, open(os.devnull, "w") as quiet:
        train(
            config,
            args.logdir,
            hooks=_hooks(config, args.logdir),
            progress=ranks.writer and not args.no_progress,
            out=sys.stdout if ranks.writer else quiet,
            ranks=ranks,
        )


def job_ranks(requested: int | None, launched: int) -> int:
    """The job's number of ranks: ``--ranks`` if given, else what torchrun started; a
    ``--ranks`` that differs from torchrun's is a ConfigError naming both."""
    if requested is not None and requested < 1:
        raise ConfigError(f"--ranks {requested}: must be at least 1")
    if requested is not None and launched > 1 and requested != launched:
        raise ConfigError(f"--ranks {requested}, but torchrun started {launched} processes")
    return requested or launched


def check_run_ranks(logdir: Path, ranks: int) -> None:
    """ConfigError if ``logdir``'s newest checkpoint was written by another number of
    ranks, before a process is started or a file written (train checks it again, on the
    checkpoint it resumes from)."""
    from dreamrl.run.checkpoint import list_checkpoints
    from dreamrl.run.resume import check_ranks

    checkpoints = list_checkpoints(logdir)
    if not checkpoints:
        return
    try:
        check_ranks(checkpoints[-1][1], ranks)
    except ConfigError:
        raise
    except (OSError, ValueError):  # damaged: train falls back to an older one, and says so
        return


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
