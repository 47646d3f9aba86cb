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
    p.add_argument(
        "--world-models",
        metavar="NAMES",
        help="comma-separated world models (rssm,decoderfree,pixel) to time one after another "
        "under their presets (wm_<name>), with a table side by side",
    )
    config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.run.bench import bench, describe

    config = resolve(args)
    set_threads(config)
    if args.world_models:
        return compare(config, args)
    result = bench(config, train_steps=args.train_steps, profile=args.profile)
    print(describe(result))
    if args.json:
        print(json.dumps(result))
    return 0


def compare(config: Any, args: argparse.Namespace) -> int:
    from dreamrl.config import ConfigError
    from dreamrl.run.bench import compare_world_models, describe, describe_comparison
    from dreamrl.world_models import WORLD_MODELS

    names = [n.strip() for n in args.world_models.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORLD_MODELS]
    if unknown or not names:
        raise ConfigError(
            f"--world-models: {', '.join(unknown) or 'none given'}; known: {', '.join(WORLD_MODELS)}"
        )
    results = compare_world_models(config, names, train_steps=args.train_steps, profile=args.profile)
    for result in results:
        print(describe(result))
    print(describe_comparison(results))
    if args.json:
        print(json.dumps(results))
    return 0
