"""Checks a dataset passes before a run learns from it, each failure one line naming
what is wrong and where: its spaces against the env's, every episode's boundaries and
values, and its size against free memory and disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dreamrl.config import ConfigError
from dreamrl.datasets.base import Dataset, Episode
from dreamrl.envs.convert import ActionConverter
from dreamrl.replay import available_ram, step_bytes
from dreamrl.spaces import Space


def describe_space(space: Space | None) -> str:
    """``float32[4]``, ``int32[] (2 actions)``, or ``(absent)``."""
    if space is None:
        return "(absent)"
    kind = f" ({space.classes} actions)" if space.discrete else ""
    return f"{space.dtype}{list(space.shape)}{kind}"


def space_mismatches(
    dataset: Dataset, obs_space: Mapping[str, Space], act_space: Space, act_converter: ActionConverter | None
) -> list[str]:
    """Every way the dataset's spaces differ from an env's, one phrase each naming the key."""
    problems = []
    for key in sorted(set(dataset.obs_space) | set(obs_space)):
        ours, theirs = dataset.obs_space.get(key), obs_space.get(key)
        if ours != theirs:
            problems.append(
                f"observation key {key!r} is {describe_space(ours)} in the dataset, "
                f"{describe_space(theirs)} in the env"
            )
    if dataset.act_space != act_space:
        problems.append(
            f"action is {describe_space(dataset.act_space)} in the dataset, "
            f"{describe_space(act_space)} in the env"
        )
    elif dataset.act_converter is not None and act_converter is not None:
        problems += _bound_mismatches(dataset.act_converter, act_converter)
    return problems


def _bound_mismatches(ours: ActionConverter, theirs: ActionConverter) -> list[str]:
    """The action bounds (continuous) or first index (discrete) that differ."""
    out = []
    for name, a, b in (("low", ours.low, theirs.low), ("high", ours.high, theirs.high)):
        if (a is None) != (b is None) or (a is not None and b is not None and not np.allclose(a, b)):
            what = "first index" if ours.classes else f"bounds ({name})"
            out.append(f"action {what} is {_values(a)} in the dataset, {_values(b)} in the env")
    return out


def _values(array: np.ndarray | None) -> str:
    return "0" if array is None else str(np.asarray(array).round(4).tolist())


def check_spaces(
    dataset: Dataset,
    env_id: str,
    obs_space: Mapping[str, Space],
    act_space: Space,
    act_converter: ActionConverter | None,
    hint: str = "",
) -> None:
    """ConfigError naming every key where the dataset does not fit the env ``env_id``."""
    problems = space_mismatches(dataset, obs_space, act_space, act_converter)
    if problems:
        more = f" ({hint})" if hint else ""
        raise ConfigError(f"dataset {dataset.source} does not fit env {env_id}: {'; '.join(problems)}{more}")


def check_episode(episode: Episode, spaces: Mapping[str, Space]) -> None:
    """ConfigError naming the episode, key and step of the first thing wrong with it: a
    key missing or of another shape or dtype, a boundary out of place (``is_first`` only
    first, ``is_last`` only last, ``is_terminal`` only where the episode ends), a value
    that is not finite, an action outside the action space."""
    name, steps = episode
    T = len(episode)
    if T < 2:
        raise ConfigError(f"{name}: holds {T} step(s); an episode needs its reset and at least one step")
    for key, space in spaces.items():
        if key not in steps:
            raise ConfigError(f"{name}: has no {key!r}")
        array = steps[key]
        if array.shape != (T, *space.shape) or array.dtype != np.dtype(space.dtype):
            raise ConfigError(
                f"{name}: {key!r} is {array.dtype}{list(array.shape[1:])}, expected {describe_space(space)}"
            )
    _check_boundaries(name, steps)
    for key in spaces:
        array = steps[key]
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            t = int(np.flatnonzero(~np.isfinite(array.reshape(T, -1)).all(1))[0])
            raise ConfigError(f"{name}: {key!r} is not finite at step {t} of {T}")
    action, space = steps["action"], spaces["action"]
    if space.discrete:
        bad = (action < 0) | (action >= space.classes)
    else:
        bad = (np.abs(action.reshape(T, -1)) > 1 + 1e-5).any(1)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        raise ConfigError(f"{name}: the action at step {t} of {T} lies outside the action space")


def _check_boundaries(name: str, steps: Mapping[str, np.ndarray]) -> None:
    first, last, terminal = steps["is_first"], steps["is_last"], steps["is_terminal"]
    T = len(first)
    if not first[0] or first[1:].any():
        t = int(np.flatnonzero(first[1:])[0]) + 1 if first[1:].any() else 0
        raise ConfigError(f"{name}: is_first is out of place at step {t} of {T} (only the reset has it)")
    if not last[-1] or last[:-1].any():
        t = int(np.flatnonzero(last[:-1])[0]) if last[:-1].any() else T - 1
        raise ConfigError(f"{name}: is_last is out of place at step {t} of {T} (only the last step has it)")
    if (terminal & ~last).any():
        t = int(np.flatnonzero(terminal & ~last)[0])
        raise ConfigError(f"{name}: is_terminal at step {t} of {T}, where the episode does not end")


@dataclass
class Survey:
    """What reading a dataset through found: the length of every episode (in stored
    steps) and how its episodes ended."""

    lengths: list[int] = field(default_factory=list)
    terminal: int = 0  # episodes that ended in a terminal state
    truncated: int = 0  # episodes cut by a time limit or by the end of the recording

    @property
    def steps(self) -> int:
        return sum(self.lengths)

    def add(self, episode: Episode) -> None:
        self.lengths.append(len(episode))
        if episode.steps["is_terminal"][-1]:
            self.terminal += 1
        else:
            self.truncated += 1


def check_fits(
    source: str, steps: int, spaces: Mapping[str, Space], directory: Path, online: int = 0
) -> None:
    """ConfigError, with the numbers, when ``steps`` steps of the dataset (and ``online``
    steps collected after it) cannot be held in the free RAM, or written as replay chunks
    under ``directory`` on its disk."""
    per_step = step_bytes(spaces)
    need = per_step * (steps + online)
    gb = 1024**3
    plus = f" + {online:,} online" if online else ""
    what = f"dataset {source}: {steps:,}{plus} steps x {per_step:,} bytes = {need / gb:.2f} GB"
    ram = available_ram()
    if ram is not None and need > ram:
        raise ConfigError(f"{what} of replay, but only {ram / gb:.2f} GB of RAM is available")
    probe = next((p for p in (directory, *directory.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ConfigError(
            f"{what} of replay chunks, but only {free / gb:.2f} GB of disk is free under {probe}"
        )


def assign_streams(lengths: Sequence[int], streams: int) -> tuple[list[int], list[int]]:
    """Which replay stream each episode goes to, and the steps each stream then holds:
    each episode, in order, to the stream holding fewest steps so far, so that the
    streams (one per training env) end up about equally long."""
    held = [0] * streams
    chosen = []
    for length in lengths:
        s = min(range(streams), key=held.__getitem__)
        chosen.append(s)
        held[s] += length
    return chosen, held
