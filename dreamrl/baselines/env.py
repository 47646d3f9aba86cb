"""A dreamrl env as the gymnasium env stable-baselines3 trains on.

:class:`SB3Env` wraps any env of dreamrl's contract (:mod:`dreamrl.envs.base`), as
:func:`dreamrl.envs.make_env` builds it for the Dreamer run: the same observation keys,
image size, action repeat and time limits. It only changes the layout
(:mod:`.observations`): images channel-first, the last ``frames`` observations stacked,
actions as ``Discrete`` or a Box in [-1, 1]. ``is_terminal`` is gymnasium's
``terminated``, an ``is_last`` without it (a time limit) ``truncated``, so SB3
bootstraps through time limits as it should. Every training episode starts from the seed
the Dreamer run's env would use for it (:func:`dreamrl.envs.episode_seed`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from dreamrl.baselines.observations import FrameStack, as_sb3, sb3_action_space, sb3_space
from dreamrl.config import Config
from dreamrl.envs import TRAIN_STREAM, episode_seed
from dreamrl.envs.base import Env, Step
from dreamrl.run.errors import RunError


@dataclass
class EnvClock:
    """Wall seconds spent inside the envs' reset and step (shared by a run's envs)."""

    seconds: float = 0.0


class SB3Env(gymnasium.Env):  # type: ignore[type-arg]
    """One dreamrl env behind gymnasium's API, in the layout SB3 takes.

    ``episode_seed(n)`` seeds the ``n``-th episode when ``reset`` is given no seed;
    ``episodes`` counts those started (a resumed run continues the count)."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium declares it so

    def __init__(
        self,
        env: Env,
        frames: int = 1,
        episode_seed: Callable[[int], int] | None = None,
        episodes: int = 0,
        clock: EnvClock | None = None,
        name: str = "env",
    ):
        self.env = env
        self.frames = frames
        self.episode_seed = episode_seed
        self.episodes = episodes
        self.clock = clock if clock is not None else EnvClock()
        self.name = name
        self.observation_space = sb3_space(env.obs_space, frames)
        self.action_space = sb3_action_space(env.act_space)
        self._stack = FrameStack(env.obs_space, frames)
        self._discrete = env.act_space.discrete
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        if seed is None and self.episode_seed is not None:
            seed = self.episode_seed(self.episodes)
        self.episodes += 1
        step = self._timed(lambda: self.env.reset(seed=seed))
        return self._observe(step), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._discrete:
            act: Any = np.int32(int(np.asarray(action).reshape(())))
        else:
            act = np.asarray(action, np.float32).reshape(self.env.act_space.shape)
        step = self._timed(lambda: self.env.step(act))
        obs = self._observe(step)
        terminated = bool(step["is_terminal"])
        truncated = bool(step["is_last"]) and not terminated
        return obs, float(step["reward"]), terminated, truncated, {}

    def close(self) -> None:
        self.env.close()

    def _timed(self, call: Callable[[], Step]) -> Step:
        start = time.perf_counter()
        try:
            return call()
        finally:
            self.clock.seconds += time.perf_counter() - start

    def _observe(self, step: Step) -> Any:
        self._steps += 1
        for key in [*self.env.obs_space, "reward"]:
            value = np.asarray(step[key])
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise RunError(
                    f"{key} from {self.name} is not finite at its step {self._steps:,} "
                    f"({value.reshape(-1)[:8].tolist()}...): a broken env"
                )
        batch = {k: np.asarray(step[k])[None] for k in self.env.obs_space}
        stacked = self._stack.observe(batch, np.array([bool(step["is_first"])]))
        return as_sb3({k: v[0] for k, v in stacked.items()})


def make_vec_env(
    config: Config, make_env: Callable[[Config, int | None, str], Env], episodes: list[int], clock: EnvClock
) -> Any:
    """SB3's vectorised env of ``agent.baseline.envs`` training envs, stepped in this
    process; env ``i`` is built as the Dreamer run's env ``i`` is and continues from its
    ``episodes[i]``-th episode."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    frames = config.agent.baseline.frame_stack

    def factory(i: int) -> Callable[[], SB3Env]:
        def build() -> SB3Env:
            env = make_env(config, episode_seed(config.seed, TRAIN_STREAM, i, 0), "train")
            seeds = functools.partial(episode_seed, config.seed, TRAIN_STREAM, i)
            return SB3Env(env, frames, seeds, episodes[i], clock, name=f"env {i}")

        return build

    return DummyVecEnv([factory(i) for i in range(config.agent.baseline.envs)])
