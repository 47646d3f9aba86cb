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
    p.add_argument(
        "--sizes",
        metavar="PRESETS",
        help="comma-separated size presets (size1m,size12m) to time at, one after another in "
        "this run, each with its own table (instead of a size in --preset)",
    )
    config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.envs import check_task

    if args.env:  # before torch is imported: a mistyped id is refused at once
        check_task(args.env)
    from dreamrl.run.bench import bench, describe

    configs = sized_configs(args)
    set_threads(configs[0][1])
    if args.world_models:
        return compare(configs, args)
    results = []
    for size, config in configs:
        result = bench(config, train_steps=args.train_steps, profile=args.profile)
        print(describe(result) if size is None else f"At {size}:\n{describe(result)}")
        results.append(result)
    if args.json:
        print(json.dumps(results[0] if not args.sizes else {s: r for (s, _), r in zip(configs, results)}))
    return 0


def sizes_of(args: argparse.Namespace) -> list[str]:
    """The size presets of ``--sizes``, in order; refused by name if unknown."""
    from dreamrl.config import ConfigError
    from dreamrl.presets import SIZE_NAMES

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZE_NAMES]
    if unknown or not sizes:
        raise ConfigError(f"--sizes: {', '.join(unknown) or 'none given'}; known: {', '.join(SIZE_NAMES)}")
    return sizes


def sized_configs(args: argparse.Namespace) -> list[tuple[str | None, Any]]:
    """The config to time at each size of ``--sizes`` (a size preset put before the
    command's presets), or the command's one config, with size None, without it."""
    from dreamrl.config import ConfigError, parse_overrides, sets_model_size

    if not args.sizes:
        return [(None, resolve(args))]
    sizes = sizes_of(args)
    resolve(args)  # moves overrides out of --preset and checks the command line as given
    if sets_model_size(args.preset, parse_overrides(args.overrides)):
        raise ConfigError(
            "--sizes chooses the model size: name no size preset in --preset and no agent.dyn.rssm.deter"
        )
    presets = list(args.preset)
    configs: list[tuple[str | None, Any]] = []
    for size in sizes:
        args.preset = [size, *presets]
        configs.append((size, resolve(args)))
    args.preset = presets
    return configs


def compare(configs: list[tuple[str | None, Any]], args: argparse.Namespace) -> int:
    from dreamrl.config import ConfigError
    from dreamrl.run.bench import compare_world_models, describe, describe_comparison
    from dreamrl.world_models import WORLD_MODELS

    names = [n.strip() for n in args.world_models.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORLD_MODELS]
    if unknown or not names:
        raise ConfigError(
            f"--world-models: {', '.join(unknown) or 'none given'}; known: {', '.join(WORLD_MODELS)}"
        )
    by_size: dict[str | None, list[dict[str, Any]]] = {}
    for size, config in configs:
        results = compare_world_models(config, names, train_steps=args.train_steps, profile=args.profile)
        for result in results:
            print(describe(result))
        by_size[size] = results
    for size, results in by_size.items():
        print(describe_comparison(results) if size is None else f"At {size}:\n{describe_comparison(results)}")
    if args.json:
        print(json.dumps(by_size[None] if not args.sizes else by_size))
    return 0
