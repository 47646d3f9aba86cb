"""``dreamrl export``: write a trained agent's deterministic policy step as an ONNX or
TorchScript file with a JSON spec beside it, and check that the file acts as the library
does (:mod:`dreamrl.export`; docs/export.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dreamrl.config import ConfigError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from dreamrl.export import CHECK_SOURCES, CHECK_STEPS, FORMATS

    p: argparse.ArgumentParser = subparsers.add_parser(
        "export", help="write the policy as an ONNX or TorchScript file that runs without dreamrl"
    )
    p.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    p.add_argument("--format", required=True, choices=FORMATS, help="file format")
    p.add_argument(
        "--out", type=Path, help="the policy file to write (default: the run dir's export/policy.onnx or .pt)"
    )
    p.add_argument(
        "--check-on",
        choices=CHECK_SOURCES,
        default="env",
        help="observations the file's actions are checked on: the run's env, or its replay",
    )
    p.add_argument("--check-steps", type=int, default=CHECK_STEPS, help="steps the check compares")
    p.add_argument("--seed", type=int, help="seed of the check's episodes (default: the run's)")
    p.add_argument(
        "--act",
        choices=("actor",),
        help="export the actor of an agent trained to act by planning (agent.act=mpc)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from dreamrl.cli.common import load_agent, output_run_dir, set_threads
    from dreamrl.export import SUFFIXES, export_policy
    from dreamrl.rundir import RunDir

    out = args.out
    if out is not None and out.suffix == ".json":
        raise ConfigError(
            f"--out {out}: the spec goes beside the policy file (its name plus .json); name the policy file"
        )
    if args.check_steps < 1:
        raise ConfigError(f"--check-steps: {args.check_steps} is out of range; allowed: 1 or more")
    agent, ckpt, env_steps = load_agent(args.logdir, args.act)
    set_threads(agent.config)
    if out is None:
        out = output_run_dir(args.logdir).exported_policy(SUFFIXES[args.format])
    run_dir = RunDir.of(args.logdir)
    exported = export_policy(
        agent,
        args.format,
        out,
        origin={"checkpoint": str(ckpt), "env_steps": env_steps},
        check_on=args.check_on,
        check_steps=args.check_steps,
        seed=args.seed,
        replay_dir=run_dir.replay if run_dir is not None else None,
    )
    print(
        f"Exported the policy of {ckpt} ({agent.config.task}, {env_steps} env steps, world model "
        f"{agent.config.agent.wm}) as {args.format}: {exported.path}"
    )
    print(f"Spec (inputs, outputs, preprocessing): {exported.spec_path}")
    assert exported.check is not None
    print(exported.check.line())
    return 0
