"""Environments: the step-dict contract, the gymnasium adapter, and env pools."""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamrl.config import Config, ConfigError
from dreamrl.envs.gym_adapter import ActionConverter, GymEnv, ObsConverter
from dreamrl.envs.spaces import STEP_KEYS, Space

SUITES = ("dmc", "atari", "atari100k", "crafter")

__all__ = [
    "STEP_KEYS",
    "ActionConverter",
    "GymEnv",
    "ObsConverter",
    "Space",
    "env_seed",
    "make_env",
]

# Seeds for training envs and evaluation episodes come from disjoint streams, so no
# evaluation episode ever starts from a seed that training used.
TRAIN_STREAM = 0  # training envs
EVAL_STREAM = 1  # evaluations during training
TEST_STREAM = 2  # `dreamrl eval`


def env_seed(seed: int, stream: int, index: int) -> int:
    """A 31-bit env seed for env/episode ``index`` of ``stream`` under run ``seed``."""
    seq = np.random.SeedSequence([seed, stream, index])
    return int(seq.generate_state(1)[0] & 0x7FFFFFFF)


def make_env(config: Config, seed: int | None) -> GymEnv:
    """Build the env named by ``config.task`` as training uses it."""
    task = config.task
    if not task:
        raise ConfigError("task: no environment given (use --env ID)")
    suite = task.split(":", 1)[0] if ":" in task else task
    if suite in SUITES:
        raise ConfigError(
            f"--env {task}: the '{suite}' suite is not available in this version of dreamrl; "
            "any gymnasium id works"
        )
    import gymnasium

    kwargs: dict[str, Any] = {"render_mode": "rgb_array"} if config.env.pixels else {}
    try:
        env = gymnasium.make(task, **kwargs)
    except (gymnasium.error.Error, ModuleNotFoundError, ImportError, AttributeError) as e:
        raise ConfigError(f"--env {task}: gymnasium cannot make this environment ({e})") from None
    return GymEnv(env, config.env.size, config.env.pixels, config.env.repeat, seed)  # type: ignore[arg-type]
