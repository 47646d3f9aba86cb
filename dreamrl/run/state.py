"""The training loop's counters, saved with every checkpoint (``loop.json``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopState:
    """Counters of the loop. The number of updates applied is the agent's
    (``agent.updates``), not counted here a second time."""

    env_steps: int = 0
    train_start: int = -1  # env step at which the replay first filled a batch
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient
    episodes: int = 0
    eval_episodes: int = 0  # evaluation episodes run so far: the next seeds' offset
    last_eval: int = 0
    elapsed: float = 0.0
    last_return: float = float("nan")
    last_eval_return: float = float("nan")
    env_episodes: list[int] = field(default_factory=list)  # episodes started per env
    # Training from a dataset before any env step (dreamrl.run.offline): the updates it
    # attempted (applied or skipped), how many it had attempted at its last evaluation,
    # its wall seconds, and the dataset's steps in each replay stream.
    offline_updates: int = 0
    offline_last_eval: int = 0
    offline_elapsed: float = 0.0  # wall seconds of the offline part (kept at each of its saves)
    dataset_steps: list[int] = field(default_factory=list)
    ranks: int = 1  # processes training the run together (data parallel); env_steps counts all of theirs
    replay: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        """A saved state; keys of older versions that are no longer kept (``updates``,
        which the agent counts) are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
