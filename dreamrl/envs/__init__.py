"""Environments: the step-dict contract, the gymnasium adapter, and env pools."""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from dreamrl.config import Config, ConfigError
from dreamrl.envs.base import Env
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.envs.gym_adapter import GymEnv
from dreamrl.spaces import STEP_KEYS, Space

SUITES = ("dmc", "atari", "crafter")

__all__ = [
    "STEP_KEYS",
    "ActionConverter",
    "Env",
    "GymEnv",
    "ObsConverter",
    "Space",
    "check_task",
    "env_seed",
    "episode_seed",
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


def episode_seed(seed: int, stream: int, env: int, episode: int) -> int:
    """The seed of training env ``env``'s ``episode``-th episode: every episode starts
    from a known seed, so a resumed run can replay an env back to where it was."""
    seq = np.random.SeedSequence([seed, stream, env, episode])
    return int(seq.generate_state(1)[0] & 0x7FFFFFFF)


def make_env(config: Config, seed: int | None, mode: str = "train") -> Env:
    """Build the env named by ``config.task`` as training (``mode='train'``) or
    evaluation (``'eval'``) uses it.

    ``dmc:<domain>_<task>``, ``atari:<game>`` and ``crafter`` name the suites; anything
    else is a gymnasium id (``module:Env-v0`` imports the module first).
    """
    task = config.task
    if not task:
        raise ConfigError("task: no environment given (use --env ID)")
    suite, _, name = task.partition(":") if ":" in task else (task, "", "")
    if suite in SUITES:
        module = importlib.import_module(f"dreamrl.envs.{suite}")
        env: Env = module.make(name, config, seed, mode)
    else:
        env = _make_gym(config, seed)
    if config.env.action_noise > 0 or config.env.sticky > 0:
        from dreamrl.envs.noise import NoisyActions

        env = NoisyActions(env, config.env.action_noise, config.env.sticky, seed)
    return env


def check_task(task: str) -> None:
    """ConfigError naming ``--env`` if ``task`` is a plain gymnasium id that gymnasium
    has not registered (with gymnasium's own hint: the versions there are, the package
    a namespace needs). Cheap, and asked before anything heavy is built, so a mistyped id
    is refused at once; the suites and ``module:Env-v0`` ids are left to :func:`make_env`
    (the latter registers its env only when its module is imported)."""
    if not task:
        raise ConfigError("task: no environment given (use --env ID)")
    if ":" in task or task in SUITES:
        return
    import gymnasium

    try:
        gymnasium.spec(task)
    except gymnasium.error.Error as e:
        raise ConfigError(f"--env {task}: gymnasium cannot make this environment ({e})") from None


def _make_gym(config: Config, seed: int | None) -> Env:
    import gymnasium

    task = config.task
    kwargs: dict[str, Any] = {}
    if config.env.pixels:
        kwargs["render_mode"] = "rgb_array"
        # Frames are drawn off-screen; without this, pygame's SDL (classic control's
        # renderer) looks for a display server and prints an error when it finds none.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        env = gymnasium.make(task, **kwargs)
    except (gymnasium.error.Error, ModuleNotFoundError, ImportError, AttributeError) as e:
        raise ConfigError(f"--env {task}: gymnasium cannot make this environment ({e})") from None
    return GymEnv(env, config.env.size, config.env.pixels, config.env.repeat, seed)  # type: ignore[arg-type]
