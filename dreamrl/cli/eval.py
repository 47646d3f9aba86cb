"""``dreamrl eval``: evaluate a trained agent on fresh seeds; the summary is saved in
the run dir (:meth:`dreamrl.rundir.RunDir.eval_result`) when there is one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dreamrl.cli.common import load_agent
from dreamrl.config import ACT_MODES, ConfigError
from dreamrl.run.disk import write_atomic
from dreamrl.rundir import RunDir


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("eval", help="evaluate a trained agent on fresh seeds")
    p.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, help="seed of the evaluation seed stream")
    p.add_argument("--envs", type=int, default=4, help="envs stepped together")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    p.add_argument(
        "--act",
        choices=ACT_MODES,
        help="act with the imagination actor or by planning in the world model (agent.act; "
        "default: as trained); mpc takes agent.mpc.* from the run's config",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def run(args: argparse.Namespace) -> int:
    import functools

    from dreamrl.envs import TEST_STREAM, env_seed, make_env
    from dreamrl.run import aggregate
    from dreamrl.run.evaluate import evaluate

    if args.episodes < 1:
        raise ConfigError(f"--episodes: {args.episodes} is out of range; allowed: 1 or more")
    agent, ckpt, env_steps = load_agent(args.logdir, args.act)
    config = agent.config
    seed = config.seed if args.seed is None else args.seed
    seeds = [env_seed(seed, TEST_STREAM, i) for i in range(args.episodes)]
    maker = functools.partial(make_env, config, None, "eval")
    result = evaluate(
        agent,
        maker,
        seeds,
        args.envs,
        deterministic=not args.stochastic,
        workers=config.run.env_workers,
        timeout=config.run.env_timeout,
    )
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
        "agent": config.agent.kind,
        "act": config.agent.act,
        # Figures of the planner, from an agent that plans (mpc/*; none otherwise).
        **(plans.summary() if (plans := getattr(agent, "plan_stats", None)) is not None else {}),
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
    if "mpc/ms_per_call" in summary:
        planner = "shooting" if agent.act_space.discrete else config.agent.mpc.optimiser
        differs = "share of steps" if agent.act_space.discrete else "mean |difference|"
        print(
            f"Planned ({planner}, horizon {config.agent.mpc.horizon}): "
            f"{summary['mpc/ms_per_call']:.1f} ms a call for {args.envs} envs, "
            f"{summary['mpc/planned_steps_per_s']:.1f} planned steps/s; first action differs from "
            f"the actor's {summary['mpc/differs_from_actor']:.3g} ({differs}); "
            f"planned return {summary['mpc/planned_return']:.3g}"
        )
    # Saved beside the run's other results: in the run dir --logdir is or sits in.
    run_dir = RunDir.of(args.logdir)
    if run_dir is not None and env_steps is not None:
        out = run_dir.eval_result(env_steps, stochastic=args.stochastic, act=config.agent.act)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(summary, indent=1) + "\n")
        print(f"Saved: {out}")
    if args.json:
        print(json.dumps(summary))
    return 0
