"""dreamrl's observations as stable-baselines3 reads them, the same in training and acting.

A dreamrl observation is a dict of model keys: images ``uint8 [H, W, C]``, vectors
``float32 [D]``. SB3 takes one Box, or a Dict of Boxes, with images channel-first (its
``CnnPolicy`` and the image part of ``MultiInputPolicy``). :func:`sb3_space` and
:class:`FrameStack` make that conversion and stack the last ``frames`` observations along
the channel (images) or feature (vectors) axis, the policy's only memory. The env wrapper
SB3 trains on (:mod:`.env`) and the agent that acts in dreamrl's evaluation
(:mod:`.agent`) both go through :class:`FrameStack`, so the policy sees the same arrays in
both. A single key is given as its Box alone, as SB3's ``MlpPolicy`` and ``CnnPolicy``
expect; several keys as a Dict (``MultiInputPolicy``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dreamrl.spaces import Space


def channels_first(space: Space, frames: int = 1) -> tuple[int, ...]:
    """The shape SB3 sees for one key: ``[C * frames, H, W]`` for an image,
    ``[D * frames]`` for a vector."""
    if space.is_image:
        h, w, c = space.shape
        return (c * frames, h, w)
    return (space.size * frames,)


def sb3_space(obs_space: Mapping[str, Space], frames: int = 1) -> Any:
    """The gymnasium observation space SB3 trains on for dreamrl's ``obs_space``."""
    from gymnasium import spaces as gs

    boxes: dict[str, Any] = {}
    for key, space in obs_space.items():
        shape = channels_first(space, frames)
        if space.is_image:
            boxes[key] = gs.Box(0, 255, shape, np.uint8)
        else:
            boxes[key] = gs.Box(-np.inf, np.inf, shape, np.float32)
    if len(boxes) == 1:
        return next(iter(boxes.values()))
    return gs.Dict(boxes)


def sb3_action_space(act_space: Space) -> Any:
    """``Discrete(classes)``, or a Box in [-1, 1]: dreamrl's actions, which its env
    adapters map to the env's own."""
    from gymnasium import spaces as gs

    if act_space.discrete:
        return gs.Discrete(act_space.classes)
    return gs.Box(-1.0, 1.0, act_space.shape, np.float32)


def policy_name(obs_space: Mapping[str, Space]) -> str:
    """The SB3 policy for these observations: one image, one vector, or a dict of keys."""
    if len(obs_space) > 1:
        return "MultiInputPolicy"
    (space,) = obs_space.values()
    return "CnnPolicy" if space.is_image else "MlpPolicy"


def to_channels_first(obs: Mapping[str, np.ndarray], obs_space: Mapping[str, Space]) -> dict[str, np.ndarray]:
    """A batch of observations ``{key: [N, ...]}`` in SB3's layout, one frame each."""
    out = {}
    for key, space in obs_space.items():
        value = np.asarray(obs[key])
        if space.is_image:
            out[key] = np.ascontiguousarray(value.transpose(0, 3, 1, 2), dtype=np.uint8)
        else:
            out[key] = value.reshape(len(value), -1).astype(np.float32, copy=False)
    return out


class FrameStack:
    """The last ``frames`` observations of each of ``N`` envs, as SB3 takes them.

    ``stack[key]`` is ``[N, C * frames, H, W]`` or ``[N, D * frames]``, the newest frame
    last. An env whose episode starts has every slot filled with its first observation,
    so the first stacked observation of an episode repeats it (gymnasium's
    ``FrameStackObservation`` default) rather than mixing in the previous episode.
    """

    def __init__(
        self, obs_space: Mapping[str, Space], frames: int, stack: dict[str, np.ndarray] | None = None
    ):
        self.obs_space = dict(obs_space)
        self.frames = frames
        self.stack: dict[str, np.ndarray] = stack if stack is not None else {}

    def observe(self, obs: Mapping[str, np.ndarray], is_first: np.ndarray) -> dict[str, np.ndarray]:
        """Push one step ``{key: [N, ...]}`` (dreamrl's layout) and return the stacks;
        rows where ``is_first`` (``[N]`` bool) start afresh. The first call starts all."""
        frame = to_channels_first(obs, self.obs_space)
        if not self.stack:
            self.stack = {k: np.concatenate([v] * self.frames, axis=1) for k, v in frame.items()}
            return self.view()
        first = np.asarray(is_first, bool).reshape(-1)
        for key, value in frame.items():
            stack = self.stack[key]
            width = value.shape[1]
            if self.frames > 1:
                stack[:, :-width] = stack[:, width:].copy()
            stack[:, -width:] = value
            if first.any():
                stack[first] = np.concatenate([value[first]] * self.frames, axis=1)
        return self.view()

    def view(self) -> dict[str, np.ndarray]:
        """The stacks as they are (copies: SB3 may keep what it is given)."""
        return {k: v.copy() for k, v in self.stack.items()}

    def rows(self, rows: np.ndarray) -> FrameStack:
        """The stacks of envs ``rows`` only."""
        return FrameStack(self.obs_space, self.frames, {k: v[rows] for k, v in self.stack.items()})


def as_sb3(stacked: Mapping[str, np.ndarray]) -> Any:
    """What SB3's policy takes: the one array when there is one key, else the dict."""
    if len(stacked) == 1:
        return next(iter(stacked.values()))
    return dict(stacked)
