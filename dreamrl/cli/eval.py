"""``dreamrl eval``: evaluate a trained agent on fresh seeds; the summary is saved in
the run dir (:meth:`dreamrl.rundir.RunDir.eval_result`) when there is one.

``--checkpoint`` picks any checkpoint of the run by its env step, so that the actor and
the planner (``--act mpc``) can be compared from the same checkpoints along a run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dreamrl.cli.common import choose_checkpoint, load_agent
from dreamrl.config import ACT_MODES, ConfigError
from dreamrl.run.disk import write_atomic
from dreamrl.rundir import RunDir


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("eval", help="evaluate a trained agent on fresh seeds")
    p.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    p.add_argument(
        "--checkpoint",
        metavar="STEP_OR_DIR",
        help="the checkpoint to evaluate: the env step it was saved at (checkpoints/ckpt-<step> of "
        "--logdir) or a checkpoint dir; default: the newest good one",
    )
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

    from dreamrl.agents.base import policy_metrics
    from dreamrl.envs import TEST_STREAM, env_seed, make_env
    from dreamrl.run import aggregate
    from dreamrl.run.evaluate import evaluate

    if args.episodes < 1:
        raise ConfigError(f"--episodes: {args.episodes} is out of range; allowed: 1 or more")
    agent, ckpt, env_steps = load_agent(choose_checkpoint(args.logdir, args.checkpoint), args.act)
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
        **policy_metrics(agent),
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
        print(describe_planning(summary, agent.act_space.discrete, config.agent.mpc, args.envs))
    # Saved beside the run's other results: in the run dir --logdir is or sits in.
    run_dir = RunDir.of(ckpt)
    if run_dir is not None and env_steps is not None:
        out = run_dir.eval_result(env_steps, stochastic=args.stochastic, act=config.agent.act)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(summary, indent=1) + "\n")
        print(f"Saved: {out}")
    if args.json:
        print(json.dumps(summary))
    return 0


def describe_planning(summary: dict[str, Any], discrete: bool, mpc: Any, envs: int) -> str:
    """The planner's lines of ``dreamrl eval``: its cost, how it departs from the actor,
    and its planned rewards over the horizon against those received."""
    planner = "shooting" if discrete else mpc.optimiser
    by = (
        "the actor's probability of its own choice less that of the plan's"
        if discrete
        else "mean |difference|"
    )
    lines = [
        f"Planned ({planner}, horizon {mpc.horizon}): {summary['mpc/ms_per_call']:.1f} ms a call for "
        f"{envs} envs, {summary['mpc/planned_steps_per_s']:.1f} planned steps/s; planned return "
        f"{summary['mpc/planned_return']:.3g}",
        f"First action differs from the actor's on {100 * summary['mpc/differs_from_actor']:.0f}% of "
        f"steps, by {summary['mpc/differs_by']:.3g} ({by})",
    ]
    if "mpc/horizon_windows" in summary:
        lines.append(
            f"Rewards over the next {mpc.horizon} steps: planned {summary['mpc/horizon_planned']:.3g}, "
            f"received {summary['mpc/horizon_received']:.3g} (planned - received "
            f"{summary['mpc/horizon_error']:.3g}, mean |error| {summary['mpc/horizon_abs_error']:.3g}, "
            f"{summary['mpc/horizon_windows']:.0f} steps matched)"
        )
    return "\n".join(lines)
