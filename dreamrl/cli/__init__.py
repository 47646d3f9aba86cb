"""``dreamrl``: the command line.

    dreamrl train --env ID --logdir DIR [--steps N] [--preset NAME ...] [--seed S] [key=value ...]
    dreamrl eval --logdir DIR [--episodes N] [--seed S] [--json]
    dreamrl diagnose --logdir DIR [--episodes N] [--context K] [--horizon H] [--json]
    dreamrl whatif --logdir DIR [--t T] [--horizon H] [--constant A | --actions a,... | --policy | --random]
    dreamrl report --logdir DIR [DIR ...] [--out FILE]
    dreamrl compare --env ID --agents dreamer,actor_real,... --seeds K --steps N --out DIR [key=value ...]
    dreamrl export --logdir DIR --format onnx|torchscript [--out PATH] [--check-on env|replay]
    dreamrl bench --env ID [--preset NAME ...] [--train-steps N] [--profile N] [--json] [key=value ...]
    dreamrl check-env ID [--steps N] [--seed S] [--preset NAME ...] [--json] [key=value ...]
    dreamrl config [--env ID] [--preset NAME ...] [key=value ...]

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``;
:mod:`.common` holds what they share. Configuration errors (unknown key, wrong type,
value out of range, unknown env id) print one line naming the problem and exit with
status 2.

:func:`console` is the ``dreamrl`` command (and ``python -m dreamrl``): it first restarts
the process with jemalloc preloaded (:mod:`dreamrl.run.allocator`). :func:`main`, called
from Python, never restarts anything.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from dreamrl.cli import bench, check_env, compare, diagnose, export, report, train, whatif
from dreamrl.cli import config as config_command
from dreamrl.cli import eval as eval_command
from dreamrl.config import ConfigError
from dreamrl.envs.pool import EnvError
from dreamrl.run.checkpoint import CheckpointError
from dreamrl.run.errors import RunError

# In the order ``dreamrl --help`` lists them.
COMMANDS: dict[str, ModuleType] = {
    "train": train,
    "eval": eval_command,
    "report": report,
    "compare": compare,
    "diagnose": diagnose,
    "whatif": whatif,
    "export": export,
    "bench": bench,
    "check-env": check_env,
    "config": config_command,
}


def parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per command."""
    p = argparse.ArgumentParser(
        prog="dreamrl", description="DreamerV3 world models for any gymnasium environment."
    )
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; ``argv`` None reads ``sys.argv``. Returns the exit status."""
    p = parser()
    # Overrides may sit anywhere among the flags: collect the stray key=value items.
    args, extra = p.parse_known_args(argv)
    stray = [x for x in extra if "=" not in x or x.startswith("-")]
    if stray:
        p.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --ranks N` starts itself again
    from dreamrl.run.allocator import tune_allocator
    from dreamrl.run.job import rank_prefix

    tune_allocator()
    error = f"{rank_prefix()}error"  # in a data-parallel job, which rank says it
    try:
        return int(COMMANDS[args.command].run(args))
    except ConfigError as e:
        print(f"{error}: {e}", file=sys.stderr)
        return 2
    except EnvError as e:
        print(f"{error}: the run stopped because an environment kept failing: {e}", file=sys.stderr)
        return 1
    except (RunError, CheckpointError) as e:
        print(f"{error}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{rank_prefix()}interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The ``dreamrl`` command: restart with jemalloc preloaded where it should be
    (``DREAMRL_MALLOC``, :func:`dreamrl.run.allocator.exec_with_jemalloc`), then run
    :func:`main` on ``sys.argv`` and exit with its status."""
    from dreamrl.run import allocator

    allocator.exec_with_jemalloc()
    raise SystemExit(main())
