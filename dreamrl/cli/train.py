"""``dreamrl train``: train an agent into a run dir; rerunning it resumes the run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dreamrl import config as cfglib
from dreamrl.cli.common import config_args, resolve, set_threads
from dreamrl.presets import SIZE_NAMES
from dreamrl.rundir import RunDir


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("train", help="train an agent (rerun to resume)")
    p.add_argument("--logdir", required=True, type=Path, help="run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.diagnostics.hook import training_hooks
    from dreamrl.run.resume import check_config
    from dreamrl.run.train import train

    saved = None
    saved_path = RunDir(args.logdir).config
    if saved_path.exists():
        saved = cfglib.from_dict(json.loads(saved_path.read_text()))
    config = resolve(args, saved)
    check_config(args.logdir, config)
    for warning in cfglib.warnings_for(config):
        print(f"warning: {warning}", file=sys.stderr)
    set_threads(config)
    auto = [p for p in config.presets if p in SIZE_NAMES and p not in args.preset]
    if auto:
        print(
            f"No size preset given: using {auto[0]} for device '{config.compute.device}' "
            "(pass --preset size12m ... size400m to choose)."
        )
    train(config, args.logdir, hooks=training_hooks(config, args.logdir), progress=not args.no_progress)
    return 0
