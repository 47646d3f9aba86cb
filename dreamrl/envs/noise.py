"""A stochastic variant of any task: noisy and sticky actions (``env.action_noise``, ``env.sticky``).

The lesson names stochastic environments as a limit of world models: a model that does
not capture the noise lets the actor exploit it. :class:`NoisyActions` makes any dreamrl
env stochastic without touching it, so the same task can be compared with and without
noise; the fantasy gap (:mod:`dreamrl.diagnostics.fantasy`) shows what it does to the
returns the model promises.

The noise is drawn from a generator seeded by each episode's seed, so an episode started
from a seed is reproduced exactly under the same actions: a resumed run replays its envs
(:mod:`dreamrl.run.resume`) as it would without noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamrl.envs.base import Env, Step
from dreamrl.spaces import Space

NOISE_STREAM = 7  # mixed into each episode's seed, so that the noise is not the env's own stream


def perturb_action(
    action: Any,
    previous: Any,
    space: Space,
    noise: float,
    sticky: float,
    rng: np.random.Generator,
) -> Any:
    """The action the env really gets instead of ``action`` (dreamrl's format).

    With probability ``sticky`` the ``previous`` action executed is repeated (never on an
    episode's first step, where ``previous`` is None). Then, for a discrete ``space``, with
    probability ``noise`` a uniformly random action replaces it; for a continuous one,
    Gaussian noise of std ``noise`` is added and the result clipped to [-1, 1]. Every call
    draws the same random numbers, whatever is chosen, so one seed gives one sequence.
    """
    stick, swap = rng.random(2)
    gaussian = rng.standard_normal(space.shape).astype(np.float32)
    choice = int(rng.integers(0, space.classes)) if space.discrete else 0
    if previous is not None and stick < sticky:
        action = previous
    if space.discrete:
        return np.int32(choice) if swap < noise else np.int32(action)
    return np.clip(np.asarray(action, np.float32) + noise * gaussian, -1.0, 1.0).astype(np.float32)


class NoisyActions:
    """``env`` with :func:`perturb_action` between the agent and it; everything else is ``env``'s."""

    def __init__(self, env: Env, noise: float, sticky: float, seed: int | None = None):
        self.env = env
        self.noise = noise
        self.sticky = sticky
        self.obs_converter = env.obs_converter
        self.act_converter = env.act_converter
        self.rng = np.random.default_rng(None if seed is None else [seed, NOISE_STREAM])
        self.previous: Any = None

    @property
    def obs_space(self) -> dict[str, Space]:
        return self.env.obs_space

    @property
    def act_space(self) -> Space:
        return self.env.act_space

    def reset(self, seed: int | None = None) -> Step:
        """Start an episode; a ``seed`` also seeds the noise of this episode."""
        if seed is not None:
            self.rng = np.random.default_rng([seed, NOISE_STREAM])
        self.previous = None
        return self.env.reset(seed=seed)

    def step(self, action: Any) -> Step:
        executed = perturb_action(action, self.previous, self.act_space, self.noise, self.sticky, self.rng)
        self.previous = executed
        return self.env.step(executed)

    def close(self) -> None:
        self.env.close()

    def __getattr__(self, name: str) -> Any:
        # What the env offers beyond the contract (bounds() for check-env, ...).
        if name == "env":  # not set yet (an object being unpickled): no recursion
            raise AttributeError(name)
        return getattr(self.env, name)
