"""What training from a dataset asks of one: its spaces, the env it names, its episodes.

A dataset hands out episodes in the replay's own layout: one step dict per stored step,
``{key: [T, ...]}`` with the observation keys, ``action`` (the action taken at that
step; zeros on the last), ``reward`` (received on arriving there), ``is_first`` (the
first step only), ``is_last`` (the last step only) and ``is_terminal`` (the last step,
and only when the episode ended in a terminal state rather than a time limit or a cut).
An episode of ``n`` actions is ``T = n + 1`` steps: the reset observation comes first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np

from dreamrl.config import EnvConfig
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.spaces import Space


class Episode(NamedTuple):
    """One episode: ``name`` says where it came from in every message about it."""

    name: str
    steps: dict[str, np.ndarray]  # {key: [T, ...]} in the replay's layout

    def __len__(self) -> int:
        return len(self.steps["is_first"])


class Dataset(Protocol):
    """A source of recorded episodes (:mod:`.minari_data`, :mod:`.replay_dir`)."""

    source: str  # what the user named: an id or a path
    obs_space: dict[str, Space]
    act_space: Space
    # How the env's own observations and actions map to the model's, so that an agent
    # trained on the dataset acts in the env (None: the dataset cannot say).
    obs_converter: ObsConverter | None
    act_converter: ActionConverter | None

    @property
    def env_id(self) -> str | None:
        """The env the dataset was recorded in, as ``dreamrl train --env`` takes it
        (None: it names none)."""
        ...

    def max_steps(self) -> int:
        """An upper bound of the steps its episodes hold, known without reading them."""
        ...

    def episodes(self) -> Iterator[Episode]:
        """Every episode, in the dataset's order, read from disk as it goes."""
        ...

    def notes(self) -> list[str]:
        """What reading the episodes left out or changed, one line each (after
        :meth:`episodes` has been read through)."""
        ...

    def hint(self, env_config: EnvConfig) -> str:
        """Why the dataset's spaces may differ from an env built with ``env_config``
        (the run's ``config.env``): '' when there is nothing to say."""
        ...
