"""Crafter (``crafter``): the open-world survival benchmark, behind dreamrl's env contract.

Crafter speaks the old gym API (``obs = env.reset()``, ``obs, reward, done, info =
env.step(action)``) and takes its seed in the constructor, so it gets its own small
adapter rather than :class:`~dreamrl.envs.gym_adapter.GymEnv`. The world, the view
and the episode length (10,000 steps) are crafter's defaults, as in the paper; the
image is ``config.env.size``. Crafter ends an episode when the player dies, which
it marks with ``info['discount'] == 0`` (``is_terminal``), or at the length limit,
a truncation (``is_last`` only). Rewards are crafter's: +1 for each achievement
unlocked the first time in an episode, and +-0.1 per point of health gained or lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dreamrl.config import Config, ConfigError
from dreamrl.envs.base import SpacesFromConverters, Step, pack
from dreamrl.envs.convert import ActionConverter, ObsConverter, ObsEntry

ACTIONS = 17  # len(crafter.constants.actions): noop, 4 moves, do, sleep, 4 places, 6 makes
LENGTH = 10_000  # crafter's default episode length, in steps


def make(name: str, config: Config, seed: int | None, mode: str) -> CrafterEnv:
    """Crafter as the paper runs it, rendered at ``config.env.size``.

    ``name`` is '' (crafter has one task) and ``mode`` changes nothing: evaluation
    plays the same game.
    """
    del mode
    if name:
        raise ConfigError(f"crafter:{name}: crafter has a single task; use --env crafter")
    return CrafterEnv((int(config.env.size[0]), int(config.env.size[1])), seed)


def flags(done: bool, info: dict[str, Any]) -> tuple[bool, bool]:
    """``(is_last, is_terminal)`` from one crafter step: a death (``discount == 0``)
    ends in a terminal state, the length limit only truncates."""
    terminal = float(info.get("discount", 1.0)) == 0.0
    return bool(done) or terminal, terminal


def _in_position_order(balance_chunk: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """Crafter's ``Env._balance_chunk`` with the chunk's objects in the order of their
    positions (one object per cell, so the order is total).

    Crafter hands it a set of objects, iterated in the order of their memory addresses,
    and picks the creature to despawn by a seeded random index into it: the same seed
    then played out differently depending on what had run in the process before, and
    evaluation on fixed seeds was not repeatable. Any fixed order keeps the pick
    uniformly random; this one makes it a function of the seed."""

    def balance(chunk: Any, objs: Any) -> None:
        balance_chunk(chunk, sorted(objs, key=lambda obj: (int(obj.pos[0]), int(obj.pos[1]))))

    return balance


class CrafterEnv(SpacesFromConverters):
    """One crafter world speaking step dicts."""

    def __init__(self, size: tuple[int, int], seed: int | None = None, length: int = LENGTH):
        try:
            import crafter
        except ImportError:
            raise ConfigError("crafter is not installed; run pip install 'dreamrl[crafter]'") from None
        self._crafter = crafter
        self.size = (int(size[0]), int(size[1]))
        self.length = length
        self.obs_converter = ObsConverter([ObsEntry("image", (), "image", (*self.size, 3))], self.size)
        self.act_converter = ActionConverter(classes=ACTIONS, low=None, high=None, shape=())
        self.env = self._build(seed)

    def _build(self, seed: int | None) -> Any:
        # Without a seed crafter draws one from numpy's global generator, which a
        # caller's np.random.seed would make the same for every env; use OS entropy.
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
        # Crafter's size is (width, height), ours (H, W). Its observation_space
        # reports (W, H, 3) although frames are [H, W, 3], so it is not read here.
        env = self._crafter.Env(size=(self.size[1], self.size[0]), length=self.length, seed=int(seed))
        env._balance_chunk = _in_position_order(env._balance_chunk)
        return env

    def reset(self, seed: int | None = None) -> Step:
        """Start an episode; with ``seed`` a fresh world from that seed, without one
        the next world of the current seed's sequence.

        Crafter seeds episode k of an env with ``hash((seed, k))``, fixed at
        construction, so reseeding builds a new crafter env (cheap next to the world
        generation every reset does anyway).
        """
        if seed is not None:
            self.env = self._build(seed)
        raw = self.env.reset()
        return pack(self.obs_converter(raw), 0.0, True, False, False)

    def step(self, action: np.ndarray | int) -> Step:
        index = self.act_converter(action)
        # Crafter indexes its list of action names, so -1 would quietly be the last one.
        if not 0 <= index < ACTIONS or index != action:
            raise ValueError(f"crafter: action {action!r} is out of range; allowed: 0 to {ACTIONS - 1}")
        raw, reward, done, info = self.env.step(index)
        last, terminal = flags(done, info)
        return pack(self.obs_converter(raw), float(reward), False, last, terminal)

    def close(self) -> None:
        # Crafter holds no external resources (no window, no process).
        pass
