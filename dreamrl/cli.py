"""``dreamrl``: the command line.

    dreamrl train --env ID --logdir DIR [--steps N] [--preset NAME ...] [--seed S] [key=value ...]
    dreamrl eval --logdir DIR [--episodes N] [--seed S] [--json]
    dreamrl diagnose --logdir DIR [--episodes N] [--context K] [--horizon H] [--json]
    dreamrl whatif --logdir DIR [--t T] [--horizon H] [--constant A | --actions a,... | --policy | --random]
    dreamrl report --logdir DIR [DIR ...] [--out FILE]
    dreamrl bench --env ID [--preset NAME ...] [--train-steps N] [--profile N] [--json] [key=value ...]
    dreamrl check-env ID [--steps N] [--seed S] [--preset NAME ...] [--json] [key=value ...]
    dreamrl config [--env ID] [--preset NAME ...] [key=value ...]

Configuration errors (unknown key, wrong type, value out of range, unknown env id)
print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dreamrl import config as cfglib
from dreamrl.config import Config, ConfigError
from dreamrl.envs.pool import EnvError
from dreamrl.presets import PRESETS, SIZE_NAMES
from dreamrl.run.checkpoint import CheckpointError
from dreamrl.run.errors import RunError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dreamrl", description="DreamerV3 world models for any gymnasium environment."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def config_args(p: argparse.ArgumentParser) -> None:
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

    train = sub.add_parser("train", help="train an agent (rerun to resume)")
    train.add_argument("--logdir", required=True, type=Path, help="run directory")
    train.add_argument("--no-progress", action="store_true", help="no progress output")
    config_args(train)

    ev = sub.add_parser("eval", help="evaluate a trained agent on fresh seeds")
    ev.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--seed", type=int, help="seed of the evaluation seed stream")
    ev.add_argument("--envs", type=int, default=4, help="envs stepped together")
    ev.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    ev.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    rep = sub.add_parser("report", help="write a self-contained HTML report of one or more run dirs")
    rep.add_argument("--logdir", required=True, type=Path, nargs="+", metavar="DIR", help="run dirs")
    rep.add_argument("--out", type=Path, help="HTML file to write (default: <first run dir>/report.html)")

    from dreamrl.diagnostics.commands import add_parsers

    add_parsers(sub)
    bench = sub.add_parser("bench", help="time train steps and count their FLOPs on this machine")
    bench.add_argument("--train-steps", type=int, default=5, help="train steps to time")
    bench.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    bench.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile one step: time per phase and the N operators with the most self time",
    )
    config_args(bench)

    check = sub.add_parser("check-env", help="build an env as training would and check it")
    check.add_argument("env_id", metavar="ID", help="gymnasium id or suite id")
    check.add_argument("--steps", type=int, default=500, help="random-action steps to run")
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--preset", nargs="+", action="extend", default=[], metavar="NAME")
    check.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    check.add_argument("overrides", nargs="*", metavar="key=value")

    show = sub.add_parser("config", help="print the resolved config and each field's meaning")
    show.add_argument("--docs", action="store_true", help="include each field's description")
    show.add_argument("--markdown", action="store_true", help="print the reference as a markdown table")
    config_args(show)
    return parser


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


def cmd_train(args: argparse.Namespace) -> int:
    from dreamrl.run.resume import check_config
    from dreamrl.run.train import train
    from dreamrl.rundir import RunDir

    saved = None
    saved_path = RunDir(args.logdir).config
    if saved_path.exists():
        saved = cfglib.from_dict(json.loads(saved_path.read_text()))
    config = resolve(args, saved)
    check_config(args.logdir, config)
    for warning in cfglib.warnings_for(config):
        print(f"warning: {warning}", file=sys.stderr)
    _set_threads(config)
    auto = [p for p in config.presets if p in SIZE_NAMES and p not in args.preset]
    if auto:
        print(
            f"No size preset given: using {auto[0]} for device '{config.compute.device}' "
            "(pass --preset size12m ... size400m to choose)."
        )
    from dreamrl.diagnostics.hook import training_hooks

    train(config, args.logdir, hooks=training_hooks(config, args.logdir), progress=not args.no_progress)
    return 0


def _set_threads(config: Config) -> None:
    if config.compute.threads:
        import torch

        torch.set_num_threads(config.compute.threads)


def cmd_eval(args: argparse.Namespace) -> int:
    import functools

    from dreamrl.agents.dreamer import DreamerAgent as Agent
    from dreamrl.envs import TEST_STREAM, env_seed, make_env
    from dreamrl.run import aggregate
    from dreamrl.run.checkpoint import find_agent_dir, load_loop_state
    from dreamrl.run.evaluate import evaluate

    if args.episodes < 1:
        raise ConfigError(f"--episodes: {args.episodes} is out of range; allowed: 1 or more")
    try:
        ckpt = find_agent_dir(args.logdir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    agent = Agent.load(ckpt)
    config = agent.config
    seed = config.seed if args.seed is None else args.seed
    seeds = [env_seed(seed, TEST_STREAM, i) for i in range(args.episodes)]
    maker = functools.partial(make_env, config, None, "eval")
    run = config.run
    result = evaluate(
        agent,
        maker,
        seeds,
        args.envs,
        deterministic=not args.stochastic,
        workers=run.env_workers,
        timeout=run.env_timeout,
    )
    env_steps = None
    if (ckpt / "loop.json").exists():
        env_steps = load_loop_state(ckpt)["env_steps"]
    # Episodes are the runs of one task: IQM and median over episodes, and a stratified
    # bootstrap CI of their mean (dreamrl/run/aggregate.py, rliable's definitions).
    stats = aggregate.aggregate(result.returns)
    ci_low, ci_high = stats["mean_ci"]
    summary = {
        **result.as_dict(),
        "env_steps": env_steps,
        "checkpoint": str(ckpt),
        "deterministic": not args.stochastic,
        "task": config.task,
        "iqm": stats["iqm"],
        "median": stats["median"],
        "ci_low": ci_low,
        "ci_high": ci_high,
        "confidence": stats["confidence"],
    }
    print(
        f"{config.task}: return {result.mean:.2f} ± {result.std:.2f} over {len(result.returns)} "
        f"episodes (checkpoint at {env_steps} env steps, "
        f"{'stochastic' if args.stochastic else 'deterministic'} policy)"
    )
    print(
        f"IQM {stats['iqm']:.2f}, median {stats['median']:.2f}, mean {result.mean:.2f} "
        f"(95% bootstrap CI {ci_low:.2f} to {ci_high:.2f})"
    )
    # A checkpoint dir is <run dir>/checkpoints/ckpt-N; save beside the run's other results.
    run_dir = args.logdir.parent.parent if (args.logdir / "agent.json").is_file() else args.logdir
    if (run_dir / "config.json").is_file() and env_steps is not None:
        suffix = "-stochastic" if args.stochastic else ""  # never overwrites a deterministic result
        out = run_dir / "eval" / f"eval-{env_steps}{suffix}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"Saved: {out}")
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from dreamrl.run.bench import bench, describe

    config = resolve(args)
    _set_threads(config)
    result = bench(config, train_steps=args.train_steps, profile=args.profile)
    print(describe(result))
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from dreamrl.diagnostics.commands import cmd_diagnose as run

    return run(args)


def cmd_whatif(args: argparse.Namespace) -> int:
    from dreamrl.diagnostics.commands import cmd_whatif as run

    return run(args)


def cmd_report(args: argparse.Namespace) -> int:
    from dreamrl.report import cmd_report as report

    return report(args.logdir, args.out)


def cmd_check_env(args: argparse.Namespace) -> int:
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


def cmd_config(args: argparse.Namespace) -> int:
    if args.markdown:
        from dreamrl.config_reference import config_reference

        print(config_reference(), end="")
        return 0
    config = resolve(args)
    docs = cfglib.field_docs()
    for path, value in cfglib.flatten(config).items():
        line = f"{path} = {value!r}"
        print(f"{line:<48} # {docs[path]}" if args.docs else line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; ``argv`` None reads ``sys.argv`` and may first restart the
    process with jemalloc preloaded (:mod:`dreamrl.run.allocator`)."""
    if argv is None:
        from dreamrl.run.allocator import exec_with_jemalloc

        exec_with_jemalloc()
    parser = _parser()
    # Overrides may sit anywhere among the flags: collect the stray key=value items.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if "=" not in x or x.startswith("-")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    from dreamrl.run.allocator import tune_allocator

    tune_allocator()
    handlers = {
        "train": cmd_train,
        "eval": cmd_eval,
        "report": cmd_report,
        "bench": cmd_bench,
        "diagnose": cmd_diagnose,
        "whatif": cmd_whatif,
        "check-env": cmd_check_env,
        "config": cmd_config,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except EnvError as e:
        print(f"error: the run stopped because an environment kept failing: {e}", file=sys.stderr)
        return 1
    except (RunError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
