"""Gymnasium environments behind dreamrl's env contract (see :mod:`dreamrl.envs.base`).

With ``pixels=True`` the env's ``rgb_array`` render replaces its observation. Parts of
the observation the model cannot read are left out; ``obs_converter.notes`` says which
(the env pool prints them once). An env with nothing readable, or with an action space
dreamrl cannot act in, is a :class:`~dreamrl.config.ConfigError`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from dreamrl.config import ConfigError
from dreamrl.envs.base import SpacesFromConverters, Step, pack
from dreamrl.envs.convert import ActionConverter, ObsConverter


class GymEnv(SpacesFromConverters):
    """One gymnasium env speaking step dicts, with action repeat."""

    def __init__(
        self, env: Any, size: tuple[int, int], pixels: bool = False, repeat: int = 1, seed: int | None = None
    ):
        self.env = env
        self.pixels = pixels
        self.repeat = repeat
        try:
            self.obs_converter = ObsConverter.from_gym(env.observation_space, size, pixels)
            self.act_converter = ActionConverter.from_gym(env.action_space)
        except ConfigError as e:  # the env cannot be trained on: say which env
            with contextlib.suppress(Exception):
                env.close()
            spec = getattr(env, "spec", None)
            raise ConfigError(f"env {spec.id}: {e}" if spec is not None else str(e)) from None
        self._seed = seed
        if seed is not None:
            env.action_space.seed(seed)

    def bounds(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Declared ``(low, high)`` of each vector key whose gymnasium Box has them."""
        from gymnasium import spaces as gs

        out = {}
        for entry in self.obs_converter.entries:
            space = self.env.observation_space
            for part in entry.path:
                space = space[part]
            if entry.kind == "vector" and isinstance(space, gs.Box):
                low = np.asarray(space.low, np.float64).reshape(-1)
                high = np.asarray(space.high, np.float64).reshape(-1)
                out[entry.key] = (low, high)
        return out

    def _obs(self, raw: Any) -> dict[str, np.ndarray]:
        render = self.env.render() if self.pixels else None
        return self.obs_converter(raw, render)

    def reset(self, seed: int | None = None) -> Step:
        """Start an episode; ``seed`` (or the constructor's seed, on the first reset
        only) seeds the env, later resets continue its random stream."""
        if seed is None:
            seed, self._seed = self._seed, None
        raw, _ = self.env.reset(seed=seed)
        return pack(self._obs(raw), 0.0, True, False, False)

    def step(self, action: np.ndarray | int) -> Step:
        env_action = self.act_converter(action)
        total = 0.0
        terminated = truncated = False
        raw = None
        for _ in range(self.repeat):
            raw, reward, terminated, truncated, _ = self.env.step(env_action)
            total += float(reward)
            if terminated or truncated:
                break
        return pack(self._obs(raw), total, False, terminated or truncated, terminated)

    def close(self) -> None:
        self.env.close()
