"""The env contract every dreamrl environment meets, whatever its suite.

``reset(seed)`` and ``step(action)`` return a step dict: the observation keys of
``obs_space`` plus ``reward`` (float32, received on arriving at this observation),
``is_first``, ``is_last`` (the episode ended, for any reason) and ``is_terminal`` (it
ended in a terminal state: a time-limit truncation is ``is_last`` without it).

Actions are dreamrl's: an integer index for a discrete space, a float vector in
[-1, 1] for a continuous one; ``act_converter`` maps them to what the underlying env
takes. ``obs_converter`` maps the underlying env's raw observations to model keys, so
a trained agent can act on them directly (``Agent.act``).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.spaces import Space

Step = dict[str, np.ndarray]


class Env(Protocol):
    """What the env pool, the train loop and evaluation rely on."""

    obs_converter: ObsConverter
    act_converter: ActionConverter

    @property
    def obs_space(self) -> dict[str, Space]: ...

    @property
    def act_space(self) -> Space: ...

    def reset(self, seed: int | None = None) -> Step: ...

    def step(self, action: Any) -> Step: ...

    def close(self) -> None: ...


class SpacesFromConverters:
    """The two space properties of :class:`Env`, read off the env's converters."""

    obs_converter: ObsConverter
    act_converter: ActionConverter

    @property
    def obs_space(self) -> dict[str, Space]:
        return self.obs_converter.spaces

    @property
    def act_space(self) -> Space:
        return self.act_converter.space


def pack(obs: dict[str, np.ndarray], reward: float, first: bool, last: bool, terminal: bool) -> Step:
    """A step dict from an observation and the four step fields."""
    return {
        **obs,
        "reward": np.float32(reward),  # type: ignore[dict-item]
        "is_first": np.bool_(first),  # type: ignore[dict-item]
        "is_last": np.bool_(last),  # type: ignore[dict-item]
        "is_terminal": np.bool_(terminal),  # type: ignore[dict-item]
    }
