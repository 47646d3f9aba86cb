"""``dreamrl bench``: time train steps and count their FLOPs on this machine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dreamrl.cli.common import config_args, resolve, set_threads


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="time train steps and count their FLOPs on this machine"
    )
    p.add_argument("--train-steps", type=int, default=5, help="train steps to time")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile one step: time per phase and the N operators with the most self time",
    )
    config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.run.bench import bench, describe

    config = resolve(args)
    set_threads(config)
    result = bench(config, train_steps=args.train_steps, profile=args.profile)
    print(describe(result))
    if args.json:
        print(json.dumps(result))
    return 0
