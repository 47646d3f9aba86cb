"""What an agent costs per env step: wall time from its log, FLOPs from torch's counter.

Wall time per env step is a run's ``time/elapsed`` over its env steps (evaluation and
saving included), from ``metrics.jsonl``. FLOPs per env step are counted by
``torch.utils.flop_counter`` on the run's own agent: one update (forward and backward)
on a replay-shaped batch, times the updates per env step (``run.train_ratio`` over the
batch's ``batch_size x batch_length`` steps), plus one policy step for one env. They are
counted for an agent that trains in dreamrl's own loop (a checkpoint ``Agent.load``
reads); for another kind a run may log them itself as ``cost/gflop_per_env_step`` in
``metrics.jsonl``, and otherwise they are not available (None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamrl.config import Config

FLOP_METRIC = "cost/gflop_per_env_step"


def wall_seconds_per_env_step(records: Sequence[dict[str, Any]]) -> float:
    """A run's wall seconds over its env steps, from its records (NaN if not logged)."""
    from dreamrl.report.html import loop_summary

    rate = loop_summary(records)["env_steps_per_s"]
    return 1.0 / rate if rate > 0 else math.nan


def logged_gflop(records: Sequence[dict[str, Any]]) -> float | None:
    """The last ``cost/gflop_per_env_step`` a run logged itself, if any."""
    values = [r[FLOP_METRIC] for r in records if isinstance(r.get(FLOP_METRIC), (int, float))]
    return float(values[-1]) if values else None


def trains_in_dreamrl_loop(config: Config) -> bool:
    """Whether ``agent.kind`` trains through dreamrl's own loop (its checkpoints hold a
    Dreamer agent), which is what :func:`counted_gflop` can load."""
    from dreamrl.agents import TRAINERS

    return TRAINERS.get(config.agent.kind) == TRAINERS["dreamer"]


def counted_gflop(run_dir: Path) -> dict[str, float]:
    """GFLOPs of one update, of one policy step for one env, and per env step, of the
    agent in ``run_dir``'s newest checkpoint (see the module docstring)."""
    import torch

    from dreamrl.agent import Agent
    from dreamrl.flops import counted
    from dreamrl.run.bench import random_batch
    from dreamrl.spaces import replay_spaces

    agent = Agent.load(run_dir, device="cpu")
    config = agent.config
    rng = np.random.default_rng(0)
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    B, T = config.batch_size, config.batch_length
    data = random_batch(spaces, B, T, rng)
    _, update = counted(lambda: agent.train_step(data))  # the loaded copy only; nothing is saved
    obs = {k: v[:, 0] for k, v in random_batch(spaces, 1, 1, rng).items() if k in agent.obs_space}
    obs["is_first"] = np.ones(1, bool)
    with torch.no_grad():
        _, act = counted(lambda: agent.policy(obs, None))
    per_env_step = update * config.run.train_ratio / (B * T) + act
    return {
        "gflop_per_update": update / 1e9,
        "gflop_per_policy_step": act / 1e9,
        "gflop_per_env_step": per_env_step / 1e9,
    }
