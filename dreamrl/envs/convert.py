"""Conversions between an underlying env's observations/actions and dreamrl's.

:class:`ObsConverter` maps raw observations to model keys: images (``uint8`` with
three dimensions, or two for grayscale) are resized to the model's resolution, other
boxes become float32 vectors, discrete observations become one-hot vectors, dict
observations keep their keys, and a ``render`` entry takes the env's rgb render.
:class:`ActionConverter` maps dreamrl actions (an index, or a vector in [-1, 1]) to
the env's action space. Both serialise to JSON so a checkpoint can rebuild them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamrl.spaces import Space


def resize_image(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8 [H, W, C] -> uint8 [size[0], size[1], C]`` with antialiased bilinear."""
    if frame.shape[:2] == tuple(size):
        return frame
    from PIL import Image

    squeeze = frame.ndim == 3 and frame.shape[-1] == 1
    img = Image.fromarray(frame[..., 0] if squeeze else frame)
    out = np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out[..., None] if squeeze else out


@dataclass(frozen=True)
class ObsEntry:
    """How one model key is read from a gymnasium observation."""

    key: str  # model key
    path: tuple[str, ...]  # nested dict keys into the raw observation ('' for none)
    kind: str  # 'image' | 'vector' | 'onehot' | 'render'
    shape: tuple[int, ...]  # model shape
    classes: int = 0  # for 'onehot'
    offset: int = 0  # for 'onehot': the space's first value (gymnasium's Discrete.start)

    def space(self) -> Space:
        if self.kind in ("image", "render"):
            return Space("uint8", self.shape)
        return Space("float32", self.shape)


class ObsConverter:
    """Maps raw gymnasium observations to dreamrl's ``{key: array}`` observations."""

    def __init__(self, entries: list[ObsEntry], size: tuple[int, int]):
        self.entries = entries
        self.size = tuple(size)

    @property
    def spaces(self) -> dict[str, Space]:
        return {e.key: e.space() for e in self.entries}

    @classmethod
    def from_gym(cls, space: Any, size: tuple[int, int], pixels: bool = False) -> ObsConverter:
        """Build the conversion for a gymnasium observation space."""
        size = (int(size[0]), int(size[1]))
        if pixels:
            return cls([ObsEntry("image", (), "render", (*size, 3))], size)
        entries: list[ObsEntry] = []
        _collect(space, (), entries, size)
        if not entries:
            raise ValueError(f"observation space {space} has nothing dreamrl can read")
        return cls(entries, size)

    def __call__(self, obs: Any, render: np.ndarray | None = None) -> dict[str, np.ndarray]:
        out = {}
        for e in self.entries:
            if e.kind == "render":
                if render is None:
                    raise ValueError("pixel observations need the env's rgb_array render")
                out[e.key] = resize_image(np.asarray(render, np.uint8), self.size)  # type: ignore[arg-type]
                continue
            value = obs
            for part in e.path:
                value = value[part]
            if e.kind == "image":
                frame = np.asarray(value, np.uint8)
                frame = frame[..., None] if frame.ndim == 2 else frame
                out[e.key] = resize_image(frame, self.size)  # type: ignore[arg-type]
            elif e.kind == "onehot":
                vec = np.zeros(e.classes, np.float32)
                vec[int(value) - e.offset] = 1.0
                out[e.key] = vec
            else:
                out[e.key] = np.asarray(value, np.float32).reshape(e.shape)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "entries": [
                {
                    "key": e.key,
                    "path": list(e.path),
                    "kind": e.kind,
                    "shape": list(e.shape),
                    "classes": e.classes,
                    "offset": e.offset,
                }
                for e in self.entries
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObsConverter:
        entries = [
            ObsEntry(
                d["key"], tuple(d["path"]), d["kind"], tuple(d["shape"]), d["classes"], d.get("offset", 0)
            )
            for d in data["entries"]
        ]
        return cls(entries, tuple(data["size"]))  # type: ignore[arg-type]


def _collect(space: Any, path: tuple[str, ...], out: list[ObsEntry], size: tuple[int, int]) -> None:
    from gymnasium import spaces as gs

    name = "_".join(path)
    if isinstance(space, gs.Dict):
        for key, sub in space.spaces.items():
            _collect(sub, (*path, str(key)), out, size)
    elif isinstance(space, gs.Box):
        shape = tuple(space.shape)
        if space.dtype == np.uint8 and len(shape) == 3 and shape[-1] in (1, 3, 4):
            out.append(ObsEntry(name or "image", path, "image", (*size, shape[-1])))
        elif space.dtype == np.uint8 and len(shape) == 2 and min(shape) >= 16:
            out.append(ObsEntry(name or "image", path, "image", (*size, 1)))
        else:
            out.append(ObsEntry(name or "vector", path, "vector", (max(1, math.prod(shape)),)))
    elif isinstance(space, gs.Discrete):
        n = int(space.n)
        out.append(ObsEntry(name or "vector", path, "onehot", (n,), n, int(space.start)))
    elif isinstance(space, gs.MultiBinary):
        out.append(ObsEntry(name or "vector", path, "vector", (max(1, math.prod(space.shape)),)))
    else:
        raise ValueError(
            f"observation {'/'.join(path) or 'space'}: {type(space).__name__} is not supported; "
            "dreamrl reads Box, Discrete, MultiBinary and Dict observations"
        )


class ActionConverter:
    """Maps dreamrl actions (index, or vector in [-1, 1]) to the env's action space."""

    def __init__(self, classes: int, low: np.ndarray | None, high: np.ndarray | None, shape: tuple[int, ...]):
        self.classes = classes
        self.low = low
        self.high = high
        self.shape = shape

    @property
    def space(self) -> Space:
        if self.classes:
            return Space("int32", (), self.classes)
        return Space("float32", (math.prod(self.shape),))

    @classmethod
    def from_gym(cls, space: Any) -> ActionConverter:
        from gymnasium import spaces as gs

        if isinstance(space, gs.Discrete):
            if int(space.start) != 0:
                return cls(int(space.n), np.array([space.start]), None, ())
            return cls(int(space.n), None, None, ())
        if isinstance(space, gs.Box):
            low = np.asarray(space.low, np.float64).flatten()
            high = np.asarray(space.high, np.float64).flatten()
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ValueError(
                    f"action space {space} has unbounded dimensions; dreamrl's bounded-normal "
                    "actor needs finite low and high"
                )
            return cls(0, low, high, tuple(space.shape))
        raise ValueError(
            f"action space {type(space).__name__} is not supported; dreamrl acts in Discrete and Box spaces"
        )

    def __call__(self, action: np.ndarray | int) -> Any:
        if self.classes:
            index = int(action)
            if not 0 <= index < self.classes or index != action:
                raise ValueError(f"action {action!r} is not one of the {self.classes} discrete actions")
            offset = int(self.low[0]) if self.low is not None else 0
            return index + offset
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        assert self.low is not None and self.high is not None
        env_action = self.low + (a + 1.0) * 0.5 * (self.high - self.low)
        return env_action.reshape(self.shape).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "low": None if self.low is None else self.low.tolist(),
            "high": None if self.high is None else self.high.tolist(),
            "shape": list(self.shape),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActionConverter:
        low = None if data["low"] is None else np.asarray(data["low"], np.float64)
        high = None if data["high"] is None else np.asarray(data["high"], np.float64)
        return cls(int(data["classes"]), low, high, tuple(data["shape"]))
