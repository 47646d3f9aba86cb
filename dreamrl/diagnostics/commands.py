"""``dreamrl diagnose`` and ``dreamrl whatif``: the diagnostics from the command line.

Both load the newest checkpoint of a run dir, record fresh episodes with the
deterministic policy on seeds training never used, and write their results into the
run dir (``diagnostics/`` and ``whatif/``), where ``dreamrl report`` finds them.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

DIAG_STREAM = 3  # episode seeds of `dreamrl diagnose` / `dreamrl whatif`


def add_parsers(sub: Any) -> None:
    """Register both commands on the CLI's subparsers."""
    diag = sub.add_parser("diagnose", help="world-model diagnostics on fresh episodes")
    diag.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    diag.add_argument("--episodes", type=int, default=8, help="episodes to record")
    diag.add_argument("--context", type=int, default=16, help="steps observed before imagining")
    diag.add_argument("--horizon", type=int, default=15, help="steps imagined")
    diag.add_argument("--sequences", type=int, default=32, help="windows cut from the episodes")
    diag.add_argument("--seed", type=int, default=0)
    diag.add_argument("--out", type=Path, help="where to write (default: the run dir's diagnostics/)")
    diag.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    what = sub.add_parser("whatif", help="counterfactual: what if other actions had been taken")
    what.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    what.add_argument("--seed", type=int, default=0, help="which fresh episode to record")
    what.add_argument("--t", type=int, default=None, help="branch after this step (default: a third in)")
    what.add_argument("--horizon", type=int, default=15)
    branch = what.add_mutually_exclusive_group()
    branch.add_argument("--constant", help="one action repeated (an index, or a value for every dim)")
    branch.add_argument("--actions", help="comma-separated actions (indices or values), one per step")
    branch.add_argument("--random", action="store_true", help="uniformly random actions (the default)")
    branch.add_argument("--policy", action="store_true", help="the agent's own actor, acting in imagination")
    what.add_argument("--out", type=Path, help="where to write (default: the run dir's whatif/)")
    what.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _record(agent: Any, seeds: list[int]) -> Any:
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    return evaluate(agent, functools.partial(make_env, agent.config, None, "eval"), seeds, 4, record=True)


def _out_dir(args: argparse.Namespace, ckpt: Path, folder: str) -> Path:
    """``--out``, else ``<run dir>/<folder>``: the run dir is --logdir, or the run dir a
    given checkpoint dir sits in. A checkpoint outside any run dir needs --out."""
    from dreamrl.config import ConfigError

    if args.out is not None:
        return Path(args.out)
    run_dir = ckpt.parent.parent if ckpt.resolve() == Path(args.logdir).resolve() else Path(args.logdir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"--logdir {args.logdir}: not inside a run dir; say where to write with --out")
    return run_dir / folder


def _seeds(agent: Any, seed: int, count: int) -> list[int]:
    from dreamrl.envs import env_seed

    return [env_seed(seed if seed else agent.config.seed, DIAG_STREAM, i) for i in range(count)]


def cmd_diagnose(args: argparse.Namespace) -> int:
    from dreamrl.agents.dreamer import DreamerAgent as Agent
    from dreamrl.diagnostics import run_diagnostics
    from dreamrl.run.checkpoint import find_agent_dir, load_loop_state

    ckpt = find_agent_dir(args.logdir)
    out = _out_dir(args, ckpt, "diagnostics")
    agent = Agent.load(ckpt)
    result = _record(agent, _seeds(agent, args.seed, args.episodes))
    step = load_loop_state(ckpt)["env_steps"] if (ckpt / "loop.json").exists() else 0
    d = run_diagnostics(
        agent, result.episodes, out, step, args.context, args.horizon, args.sequences, args.seed
    )
    if d is None:
        longest = max(result.lengths)
        print(
            f"error: no episode holds {args.context + args.horizon} steps (the longest has {longest}); "
            "lower --context or --horizon"
        )
        return 1
    print(
        f"{agent.config.task}, checkpoint at {step:,} env steps, {d['sequences']} windows of "
        f"{args.context} observed + {args.horizon} imagined steps from {args.episodes} fresh episodes:"
    )
    h = d["horizon"]
    print(f"  reward error  h=1 {d['reward_error'][0]:.4g}  h={h} {d['reward_error'][-1]:.4g}")
    print(f"  KL real||imag h=1 {d['kl'][0]:.3f}  h={h} {d['kl'][-1]:.3f} nats")
    print(f"  drift         h=1 {d['drift'][0]:.3f}  h={h} {d['drift'][-1]:.3f}")
    print(f"  {d['summary']}")
    print(f"Written: {out / f'diagnose-{step:012d}.json'} and {out / d['images']['openloop']}")
    if args.json:
        print(json.dumps(d))
    return 0


def _parse_actions(agent: Any, args: argparse.Namespace, horizon: int, rng: np.random.Generator) -> tuple:
    space = agent.act_space
    if args.constant is not None:
        value = float(args.constant)
        actions = np.full((horizon, *space.shape), value, np.float32 if not space.discrete else np.int64)
        return actions, f"constant action {args.constant}"
    if args.policy:
        return "policy", "the agent's policy"
    if args.actions is not None:
        values = [float(v) for v in args.actions.split(",") if v.strip()]
        if len(values) < horizon:
            values += [values[-1]] * (horizon - len(values))
        actions = np.asarray(values[:horizon])
        if not space.discrete:
            actions = np.repeat(actions[:, None], space.size, 1)
        return actions, f"actions {args.actions}"
    if space.discrete:
        return rng.integers(0, space.classes, horizon), "random actions"
    return rng.uniform(-1, 1, (horizon, space.size)).astype(np.float32), "random actions"


def cmd_whatif(args: argparse.Namespace) -> int:
    from dreamrl.agents.dreamer import DreamerAgent as Agent
    from dreamrl.diagnostics import whatif, whatif_picture
    from dreamrl.run.checkpoint import find_agent_dir, load_loop_state

    ckpt = find_agent_dir(args.logdir)
    out = _out_dir(args, ckpt, "whatif")
    agent = Agent.load(ckpt)
    episode = _record(agent, _seeds(agent, args.seed, 1)).episodes[0]
    length = len(episode["reward"])
    t = length // 3 if args.t is None else args.t
    if not 0 <= t < length - 1:
        print(f"error: --t {t} is outside the recorded episode (steps 0..{length - 2} can branch)")
        return 1
    horizon = min(args.horizon, length - 1 - t)
    actions, description = _parse_actions(agent, args, horizon, np.random.default_rng(args.seed))
    result = whatif(agent, episode, t, actions, horizon, description, seed=args.seed)
    step = load_loop_state(ckpt)["env_steps"] if (ckpt / "loop.json").exists() else 0
    out.mkdir(parents=True, exist_ok=True)
    stem = f"whatif-{step:012d}-t{t}"
    image_keys = [k for k, s in agent.obs_space.items() if s.is_image]
    (out / f"{stem}.png").write_bytes(whatif_picture(result, image_keys))
    record = {**result.as_dict(), "image": f"{stem}.png", "step": step}
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    print(f"From step {t} of a fresh {length}-step episode, {horizon} steps ahead:")
    for name, branch in (
        ("real", result.real),
        ("predicted, actions taken", result.factual),
        (f"predicted, {description}", result.counterfactual),
    ):
        print(f"  {name:<40} return {branch.total:8.3f}   continue at the end {branch.continues[-1]:.3f}")
    print(f"Written: {out / (stem + '.json')} and {out / (stem + '.png')}")
    if args.json:
        print(json.dumps(record))
    return 0
