"""``dreamrl check-env``: build an env as training would and check it against the
contract the loop relies on; exit status 1 when it breaks it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dreamrl import config as cfglib
from dreamrl.cli.common import _split_presets


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "check-env", help="build an env as training would and check it"
    )
    p.add_argument("env_id", metavar="ID", help="gymnasium id or suite id")
    p.add_argument("--steps", type=int, default=500, help="random-action steps to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", nargs="+", action="extend", default=[], metavar="NAME")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.envs import make_env
    from dreamrl.envs.check import check_env

    _split_presets(args)
    overrides = {**cfglib.parse_overrides(args.overrides), "task": args.env_id}
    config = cfglib.build_config(args.preset, overrides)
    env = make_env(config, args.seed)
    try:
        report = check_env(config, env, args.steps, args.seed)
    finally:
        env.close()
    print(report.text())
    if args.json:
        print(json.dumps(report.as_dict()))
    return 0 if report.ok else 1
