"""Conversions between an underlying env's observations/actions and dreamrl's.

:class:`ObsConverter` maps raw observations to model keys: images (``uint8`` with
three dimensions, or two for grayscale) are resized to the model's resolution, other
boxes and multi-binary spaces become float32 vectors, discrete observations one-hot
vectors, multi-discrete ones their parts' one-hot vectors end to end; dict and tuple
observations are flattened into one key per part (``outer_inner``, ``name_0``), and a
``render`` entry takes the env's rgb render. A part the model cannot read (text, a
graph, a sequence of varying length) is left out, with a note saying which and why;
only a space with nothing readable in it is an error (:class:`~dreamrl.config.ConfigError`).
:class:`ActionConverter` maps dreamrl actions (an index, or a vector in [-1, 1]) to
the env's action space. Both serialise to JSON so a checkpoint can rebuild them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dreamrl.config import ConfigError
from dreamrl.spaces import STEP_KEYS, Space


def resize_image(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8 [H, W, C] -> uint8 [size[0], size[1], C]`` with antialiased bilinear."""
    if frame.shape[:2] == tuple(size):
        return frame
    from PIL import Image

    squeeze = frame.ndim == 3 and frame.shape[-1] == 1
    img = Image.fromarray(frame[..., 0] if squeeze else frame)
    out = np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return out[..., None] if squeeze else out


# Model keys a dict observation may not take: a step dict holds the step's own fields
# beside the observation, and the agent names its loss terms after the decoded keys.
RESERVED_KEYS = frozenset(("action", *STEP_KEYS, "rew", "con", "dyn", "rep", "policy", "value", "repval"))

# Why a space the model cannot read is left out, by gymnasium space class name.
_UNREADABLE = {
    "Text": "it is text",
    "Graph": "it is a graph",
    "Sequence": "it is a sequence of varying length",
    "OneOf": "its space changes from step to step",
}
_READS = "the model reads images and vectors"


@dataclass(frozen=True)
class ObsEntry:
    """How one model key is read from a gymnasium observation."""

    key: str  # model key
    path: tuple[str | int, ...]  # dict keys and tuple indices into the raw observation (() for none)
    kind: str  # 'image' | 'vector' | 'onehot' | 'multionehot' | 'render'
    shape: tuple[int, ...]  # model shape
    classes: int = 0  # for 'onehot'
    offset: int = 0  # for 'onehot': the space's first value (gymnasium's Discrete.start)
    parts: tuple[int, ...] = ()  # for 'multionehot': classes of each part (MultiDiscrete.nvec, flat)
    starts: tuple[int, ...] = ()  # for 'multionehot': each part's first value (MultiDiscrete.start)

    def space(self) -> Space:
        if self.kind in ("image", "render"):
            return Space("uint8", self.shape)
        return Space("float32", self.shape)


class ObsConverter:
    """Maps raw gymnasium observations to dreamrl's ``{key: array}`` observations.

    ``notes`` holds one line for each part of the observation space left out (or read
    under another name), for whoever builds the env to show the user once.
    """

    def __init__(self, entries: list[ObsEntry], size: tuple[int, int], notes: Sequence[str] = ()):
        self.entries = entries
        self.size = tuple(size)
        self.notes = tuple(notes)

    @property
    def spaces(self) -> dict[str, Space]:
        return {e.key: e.space() for e in self.entries}

    @classmethod
    def from_gym(cls, space: Any, size: tuple[int, int], pixels: bool = False) -> ObsConverter:
        """Build the conversion for a gymnasium observation space.

        Raises :class:`ConfigError` when nothing in ``space`` is readable."""
        size = (int(size[0]), int(size[1]))
        if pixels:
            return cls([ObsEntry("image", (), "render", (*size, 3))], size)
        entries: list[ObsEntry] = []
        notes: list[str] = []
        _collect(space, (), (), entries, notes, size)
        if not entries:
            why = f" ({'; '.join(notes)})" if notes else ""
            raise ConfigError(f"observation space {space}: nothing in it is readable by dreamrl{why}")
        return cls(entries, size, notes)

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
                vec[_index(e.key, int(value), e.offset, e.classes)] = 1.0
                out[e.key] = vec
            elif e.kind == "multionehot":
                values = np.asarray(value, np.int64).reshape(-1)
                vec = np.zeros(e.shape, np.float32)
                first = 0
                for i, (n, start) in enumerate(zip(e.parts, e.starts)):
                    vec[first + _index(f"{e.key}[{i}]", int(values[i]), start, n)] = 1.0
                    first += n
                out[e.key] = vec
            else:
                out[e.key] = np.asarray(value, np.float32).reshape(e.shape)
        return out

    def to_json(self) -> dict[str, Any]:
        entries = []
        for e in self.entries:
            d: dict[str, Any] = {
                "key": e.key,
                "path": list(e.path),
                "kind": e.kind,
                "shape": list(e.shape),
                "classes": e.classes,
                "offset": e.offset,
            }
            if e.parts:
                d["parts"], d["starts"] = list(e.parts), list(e.starts)
            entries.append(d)
        data: dict[str, Any] = {"size": list(self.size), "entries": entries}
        if self.notes:
            data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObsConverter:
        entries = [
            ObsEntry(
                d["key"],
                tuple(d["path"]),
                d["kind"],
                tuple(d["shape"]),
                d["classes"],
                d.get("offset", 0),
                tuple(d.get("parts", ())),
                tuple(d.get("starts", ())),
            )
            for d in data["entries"]
        ]
        return cls(entries, tuple(data["size"]), data.get("notes", ()))  # type: ignore[arg-type]


def model_observation(
    obs: Any, obs_space: Mapping[str, Space], converter: ObsConverter | None
) -> dict[str, np.ndarray]:
    """One observation as the model reads it, ``{key: [...]}``: ``obs`` is what the env
    returned (for an env trained with ``env.pixels=true``, ``env.render()``) or already a
    dict holding the model's keys."""
    if isinstance(obs, Mapping) and set(obs_space) <= set(obs):
        return {k: np.asarray(obs[k]) for k in obs_space}
    if converter is None:
        raise ValueError("this agent has no observation converter; pass a dict of model keys")
    pixels = any(e.kind == "render" for e in converter.entries)
    return converter(None, obs) if pixels else converter(obs)


def _index(key: str, value: int, start: int, classes: int) -> int:
    """The class of ``value`` in a space of ``classes`` values from ``start``. A value
    outside it is the env's error, which would otherwise land on a wrong class unseen."""
    if not start <= value < start + classes:
        raise ValueError(
            f"observation {key}: {value} is outside its space's values {start}..{start + classes - 1}"
        )
    return value - start


def _collect(
    space: Any,
    path: tuple[str | int, ...],
    names: tuple[str, ...],
    out: list[ObsEntry],
    notes: list[str],
    size: tuple[int, int],
) -> None:
    """Append the entries of ``space``, found at ``path`` in the raw observation and
    named by ``names`` joined with ``_``, to ``out``, and a line to ``notes`` for each
    part left out or renamed."""
    from gymnasium import spaces as gs

    if isinstance(space, gs.Dict):
        for key, sub in space.spaces.items():
            _collect(sub, (*path, str(key)), (*names, str(key)), out, notes, size)
        return
    if isinstance(space, gs.Tuple):
        for i, sub in enumerate(space.spaces):  # a top-level tuple's parts: obs_0, obs_1, ...
            _collect(sub, (*path, i), (*(names or ("obs",)), str(i)), out, notes, size)
        return
    name = "_".join(names)
    entry = _entry(space, name, path, size)
    where = f"observation key {name!r}" if name else "the observation"
    if isinstance(entry, str):
        notes.append(f"{where} ({type(space).__name__}) left out: {entry}")
        return
    if entry.key in RESERVED_KEYS:
        renamed = f"obs_{entry.key}"
        notes.append(f"{where} is read as {renamed!r}: {entry.key!r} names a step field or loss term")
        entry = dataclasses.replace(entry, key=renamed)
    if any(e.key == entry.key for e in out):
        notes.append(f"{where} left out: another part of the observation is read as {entry.key!r}")
        return
    out.append(entry)


def _entry(space: Any, name: str, path: tuple[str | int, ...], size: tuple[int, int]) -> ObsEntry | str:
    """How to read one leaf space, or why it cannot be read."""
    from gymnasium import spaces as gs

    if isinstance(space, gs.Box):
        shape = tuple(space.shape)
        if not math.prod(shape):
            return f"it holds no values (shape {shape})"
        if space.dtype == np.uint8 and len(shape) == 3 and shape[-1] in (1, 3, 4):
            return ObsEntry(name or "image", path, "image", (*size, shape[-1]))
        if space.dtype == np.uint8 and len(shape) == 2 and min(shape) >= 16:
            return ObsEntry(name or "image", path, "image", (*size, 1))
        return ObsEntry(name or "vector", path, "vector", (math.prod(shape),))
    if isinstance(space, gs.Discrete):
        n = int(space.n)
        return ObsEntry(name or "vector", path, "onehot", (n,), n, int(space.start))
    if isinstance(space, gs.MultiDiscrete):
        parts = tuple(int(n) for n in np.asarray(space.nvec).reshape(-1))
        if not parts:
            return "it holds no values (no parts)"
        start = getattr(space, "start", None)  # gymnasium >= 1.0
        starts = (0,) * len(parts) if start is None else tuple(int(s) for s in np.asarray(start).reshape(-1))
        return ObsEntry(name or "vector", path, "multionehot", (sum(parts),), parts=parts, starts=starts)
    if isinstance(space, gs.MultiBinary):
        if not math.prod(space.shape):
            return f"it holds no values (shape {tuple(space.shape)})"
        return ObsEntry(name or "vector", path, "vector", (math.prod(space.shape),))
    kind = type(space).__name__
    for cls in type(space).__mro__:
        if cls.__name__ in _UNREADABLE and cls.__module__.startswith("gymnasium"):
            return f"{_UNREADABLE[cls.__name__]}; {_READS}"
    if _samples_text(space):  # a text space of the env's own (minigrid's MissionSpace)
        return f"it is text; {_READS}"
    return (
        f"dreamrl cannot encode a {kind} space; it reads Box, Discrete, MultiDiscrete, "
        "MultiBinary, Dict and Tuple spaces"
    )


def _samples_text(space: Any) -> bool:
    try:
        return isinstance(space.sample(), str)
    except Exception:  # a space of unknown make: sampling it may fail any way
        return False


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
                raise ConfigError(
                    f"action space {space} has unbounded dimensions; dreamrl's bounded-normal "
                    "actor needs finite low and high"
                )
            return cls(0, low, high, tuple(space.shape))
        raise ConfigError(
            f"action space {space} is not supported: dreamrl acts in Discrete and Box spaces "
            "(one discrete choice, or one vector of bounded values, per step)"
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
