"""An off-policy baseline's replay buffer in its checkpoint, as plain arrays.

stable-baselines3 saves a replay buffer by pickling it, and unpickling runs code; a
dreamrl checkpoint holds nothing that runs when read. :func:`save_buffer` writes the
steps the buffer holds, oldest first, into one ``.npz`` of plain arrays, and
:func:`restore_buffer` puts them back into a fresh buffer (``allow_pickle=False``). The
new buffer may be larger or smaller than the saved one (``run.steps`` may change on
resume, and the buffer never holds more than the run's steps): it keeps the newest steps
that fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# The arrays of SB3's ReplayBuffer and DictReplayBuffer, each [buffer_size, n_envs, ...]
# (the observations a dict of such arrays for dict observations).
FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def held(buffer: Any) -> int:
    """Steps (of each env) the buffer holds."""
    return int(buffer.buffer_size if buffer.full else buffer.pos)


def _chronological(array: np.ndarray, buffer: Any) -> np.ndarray:
    """The rows a buffer holds, oldest first."""
    if buffer.full:
        return np.concatenate([array[buffer.pos :], array[: buffer.pos]])
    return array[: buffer.pos]


def _arrays(buffer: Any) -> dict[str, np.ndarray]:
    """Every array of the buffer by a flat name (``observations/<key>`` for a dict)."""
    out = {}
    for name in FIELDS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            out.update({f"{name}/{key}": v for key, v in value.items()})
        elif isinstance(value, np.ndarray):
            out[name] = value
    return out


def save_buffer(buffer: Any, path: Path) -> int:
    """Write what ``buffer`` holds to ``path`` (an ``.npz``); the steps written."""
    arrays = {name: _chronological(a, buffer) for name, a in _arrays(buffer).items()}
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    return held(buffer)


def restore_buffer(buffer: Any, path: Path) -> int:
    """Fill the fresh ``buffer`` with the steps :func:`save_buffer` wrote to ``path``,
    the newest that fit; the steps restored."""
    targets = _arrays(buffer)
    with np.load(path, allow_pickle=False) as saved:
        missing = sorted(set(targets) - set(saved.files))
        if missing:
            raise ValueError(f"{path}: no {', '.join(missing)} in the saved replay buffer")
        steps = 0
        for name, target in targets.items():
            rows = saved[name][-len(target) :] if len(target) else saved[name][:0]
            if rows.shape[1:] != target.shape[1:]:
                raise ValueError(
                    f"{path}: {name} holds steps of shape {list(rows.shape[1:])}, the buffer "
                    f"{list(target.shape[1:])}"
                )
            target[: len(rows)] = rows
            steps = len(rows)
    buffer.pos = steps % buffer.buffer_size
    buffer.full = steps == buffer.buffer_size
    return steps
