"""Ground types every layer shares: the spaces of the env contract and of a replay step.

An environment speaks in step dicts: observation keys, ``reward``, ``is_first``,
``is_last`` and ``is_terminal``. Observation keys are either images (``uint8
[H, W, C]``) or vectors (``float32 [D]``). The action is one key, ``action``: an
integer index for a discrete space, a float vector in [-1, 1] for a continuous one
(the adapter rescales it to the env's bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

STEP_KEYS = ("reward", "is_first", "is_last", "is_terminal")


@dataclass(frozen=True)
class Space:
    """dtype and shape of one key; ``classes`` is set for discrete actions."""

    dtype: str
    shape: tuple[int, ...]
    classes: int = 0

    @property
    def is_image(self) -> bool:
        return self.dtype == "uint8" and len(self.shape) == 3

    @property
    def discrete(self) -> bool:
        return self.classes > 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "classes": self.classes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Space:
        return cls(str(data["dtype"]), tuple(int(x) for x in data["shape"]), int(data["classes"]))

    def zeros(self, *lead: int) -> np.ndarray:
        return np.zeros((*lead, *self.shape), np.dtype(self.dtype))


def replay_spaces(obs_space: dict[str, Space], act_space: Space) -> dict[str, Space]:
    """Everything a replay step holds: observations, the action, reward and flags."""
    return {
        **obs_space,
        "action": act_space,
        "reward": Space("float32", ()),
        "is_first": Space("bool", ()),
        "is_last": Space("bool", ()),
        "is_terminal": Space("bool", ()),
    }


def action_width(space: Space) -> int:
    """Width of the action as the model sees it: one-hot classes or vector dims."""
    return space.classes if space.discrete else space.size
