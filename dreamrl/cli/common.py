"""What several commands share: the config arguments, how they resolve into a config,
the thread count, and the env steps a checkpoint was taken at."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, cast

from dreamrl import config as cfglib
from dreamrl.config import Config, ConfigError
from dreamrl.presets import PRESETS
from dreamrl.rundir import LOOP_STATE, RunDir

if TYPE_CHECKING:
    from dreamrl.agents.base import Agent
    from dreamrl.agents.dreamer import DreamerAgent


def config_args(p: argparse.ArgumentParser) -> None:
    """``--env``, ``--preset``, ``--steps``, ``--seed`` and ``key=value`` overrides."""
    p.add_argument("--env", help="gymnasium id (also 'module:Env-v0')")
    p.add_argument(
        "--preset",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help=f"presets, applied left to right: {', '.join(PRESETS)}",
    )
    p.add_argument("--steps", type=float, help="env steps to train for (run.steps)")
    p.add_argument("--seed", type=int, help="run seed")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides by dotted path, e.g. run.train_ratio=512",
    )


def _split_presets(args: argparse.Namespace) -> None:
    """``--preset a b.c=1`` swallows overrides: move ``k=v`` items back."""
    presets = [p for p in args.preset if "=" not in p]
    moved = [p for p in args.preset if "=" in p]
    args.preset = presets
    args.overrides = moved + list(args.overrides)


def resolve(args: argparse.Namespace, saved: Config | None = None) -> Config:
    """Build the run's config from the command line (and a saved one on resume)."""
    _split_presets(args)
    overrides = cfglib.parse_overrides(args.overrides)
    if args.env:
        overrides["task"] = args.env
    elif saved is not None:
        overrides.setdefault("task", saved.task)
    if args.steps is not None:
        overrides["run.steps"] = str(args.steps)
    if args.seed is not None:
        overrides["seed"] = str(args.seed)
    return cfglib.build_config(args.preset, overrides)


def set_threads(config: Config) -> None:
    """Apply ``compute.threads`` to torch (0 keeps torch's own choice)."""
    if config.compute.threads:
        import torch

        torch.set_num_threads(config.compute.threads)


def checkpoint_env_steps(ckpt: Path) -> int | None:
    """The env steps the training loop had taken when it saved checkpoint dir ``ckpt``;
    None for an agent saved without the loop's state."""
    if not (ckpt / LOOP_STATE).exists():
        return None
    from dreamrl.run.checkpoint import load_loop_state

    return int(load_loop_state(ckpt)["env_steps"])


def choose_checkpoint(logdir: Path, choice: str | None) -> Path:
    """What ``--checkpoint`` names: ``logdir`` itself when None; the run dir's
    ``checkpoints/ckpt-<step>`` for an env step; else a checkpoint dir as given. A step
    with no checkpoint is a ConfigError listing the steps there are."""
    from dreamrl.run.checkpoint import list_checkpoints
    from dreamrl.rundir import is_checkpoint_dir

    if choice is None:
        return Path(logdir)
    if choice.strip().isdigit():
        step = int(choice)
        kept = list_checkpoints(Path(logdir))
        for saved, path in kept:
            if saved == step:
                return path
        steps = [s for s, _ in kept]
        there = (
            ", ".join(map(str, steps))
            if len(steps) <= 12
            else f"{len(steps)}, from {steps[0]} to {steps[-1]}"
        )
        raise ConfigError(
            f"--checkpoint {step}: no checkpoint at env step {step} in {RunDir(Path(logdir)).checkpoints} "
            f"(there are: {there or 'none'})"
        )
    path = Path(choice)
    if not is_checkpoint_dir(path):
        raise ConfigError(
            f"--checkpoint {choice}: not an env step, nor a checkpoint dir (no agent.json there)"
        )
    return path


def load_agent(logdir: Path, act: str | None = None) -> tuple[Agent, Path, int | None]:
    """The agent ``--logdir`` names (a checkpoint dir, or a run dir's newest good
    checkpoint), of whatever kind it is (:func:`dreamrl.agents.load_agent`), acting by
    ``act`` when given (``agent.act``), the checkpoint dir it came from and the env steps it
    was saved at. A run in training meanwhile may prune that checkpoint while it is read:
    the next newest is read then. A dir that holds no agent is a ConfigError (exit status 2)."""
    from dreamrl.agents import load_agent as load_any
    from dreamrl.run.checkpoint import read_newest

    def read(ckpt: Path) -> tuple[Agent, Path, int | None]:
        return load_any(ckpt, act=act), ckpt, checkpoint_env_steps(ckpt)

    try:
        return read_newest(Path(logdir), read)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None


def load_world_model_agent(logdir: Path) -> tuple[DreamerAgent, Path, int | None]:
    """As :func:`load_agent`, for the commands that look inside a world model
    (``diagnose``, ``whatif``): an agent without one (a model-free baseline) is a
    ConfigError naming its kind."""
    agent, ckpt, env_steps = load_agent(logdir)
    if getattr(agent, "wm", None) is None:
        raise ConfigError(
            f"--logdir {logdir}: it holds a {agent.config.agent.kind} agent, which has no world model "
            "to diagnose or imagine with"
        )
    return cast("DreamerAgent", agent), ckpt, env_steps


def output_run_dir(logdir: Path) -> RunDir:
    """The run dir ``--logdir`` is, or the one the checkpoint dir it names sits in: where
    a command writes its results unless ``--out`` says otherwise."""
    run_dir = RunDir.of(logdir)
    if run_dir is None:
        raise ConfigError(f"--logdir {logdir}: not inside a run dir; say where to write with --out")
    return run_dir
