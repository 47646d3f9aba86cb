"""``dreamrl whatif``: a counterfactual on one fresh episode: from step ``--t``, what the
world model predicts under other actions than those taken, written into the run dir's
``whatif/`` where ``dreamrl report`` finds it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamrl.cli.common import load_world_model_agent, output_run_dir

if TYPE_CHECKING:
    from dreamrl.spaces import Space


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "whatif", help="counterfactual: what if other actions had been taken"
    )
    p.add_argument("--logdir", required=True, type=Path, help="run dir or checkpoint dir")
    p.add_argument("--seed", type=int, default=0, help="which fresh episode to record")
    p.add_argument("--t", type=int, default=None, help="branch after this step (default: a third in)")
    p.add_argument("--horizon", type=int, default=15)
    branch = p.add_mutually_exclusive_group()
    branch.add_argument("--constant", help="one action repeated (an index, or a value for every dim)")
    branch.add_argument("--actions", help="comma-separated actions (indices or values), one per step")
    branch.add_argument("--random", action="store_true", help="uniformly random actions (the default)")
    branch.add_argument("--policy", action="store_true", help="the agent's own actor, acting in imagination")
    p.add_argument("--out", type=Path, help="where to write (default: the run dir's whatif/)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def branch_actions(
    space: Space,
    horizon: int,
    rng: np.random.Generator,
    constant: str | None = None,
    actions: str | None = None,
    policy: bool = False,
) -> tuple[np.ndarray | str, str]:
    """The counterfactual's ``horizon`` env-format actions (or ``"policy"``) as the
    flags ask for them, and their description: ``--constant`` repeats one value,
    ``--actions`` is a comma-separated list (its last value repeated to the horizon),
    ``--policy`` the agent's actor, and otherwise uniformly random actions."""
    if constant is not None:
        value = float(constant)
        dtype = np.float32 if not space.discrete else np.int64
        return np.full((horizon, *space.shape), value, dtype), f"constant action {constant}"
    if policy:
        return "policy", "the agent's policy"
    if actions is not None:
        values = [float(v) for v in actions.split(",") if v.strip()]
        if len(values) < horizon:
            values += [values[-1]] * (horizon - len(values))
        chosen = np.asarray(values[:horizon])
        if not space.discrete:
            chosen = np.repeat(chosen[:, None], space.size, 1)
        return chosen, f"actions {actions}"
    if space.discrete:
        return rng.integers(0, space.classes, horizon), "random actions"
    return rng.uniform(-1, 1, (horizon, space.size)).astype(np.float32), "random actions"


def run(args: argparse.Namespace) -> int:
    from dreamrl.diagnostics import whatif
    from dreamrl.diagnostics.record import diagnostic_seeds, record_episodes, write_whatif

    agent, _, env_steps = load_world_model_agent(args.logdir)
    out = Path(args.out) if args.out is not None else output_run_dir(args.logdir).whatif
    episode = record_episodes(agent, diagnostic_seeds(agent.config.seed, args.seed, 1)).episodes[0]
    length = len(episode["reward"])
    t = length // 3 if args.t is None else args.t
    if not 0 <= t < length - 1:
        print(f"error: --t {t} is outside the recorded episode (steps 0..{length - 2} can branch)")
        return 1
    horizon = min(args.horizon, length - 1 - t)
    actions, description = branch_actions(
        agent.act_space,
        horizon,
        np.random.default_rng(args.seed),
        constant=args.constant,
        actions=args.actions,
        policy=args.policy,
    )
    result = whatif(agent, episode, t, actions, horizon, description, seed=args.seed)
    step = env_steps or 0
    image_keys = [k for k, s in agent.wm.decoded_spaces.items() if s.is_image]  # the decoded ones
    path, picture, record = write_whatif(result, out, step, image_keys)
    print(f"From step {t} of a fresh {length}-step episode, {horizon} steps ahead:")
    for name, branch in (
        ("real", result.real),
        ("predicted, actions taken", result.factual),
        (f"predicted, {description}", result.counterfactual),
    ):
        print(f"  {name:<40} return {branch.total:8.3f}   continue at the end {branch.continues[-1]:.3f}")
    print(f"Written: {path} and {picture}")
    if args.json:
        print(json.dumps(record))
    return 0
