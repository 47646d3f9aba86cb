"""Agents: what the training loop trains. :mod:`.base` says what the loop asks of one;
:mod:`.dreamer` is the DreamerV3 agent; :func:`make_agent` builds the one a config names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dreamrl.agents.base import Agent
    from dreamrl.config import Config
    from dreamrl.envs.convert import ActionConverter, ObsConverter
    from dreamrl.spaces import Space


def make_agent(
    config: Config,
    obs_space: Mapping[str, Space],
    act_space: Space,
    obs_converter: ObsConverter | None = None,
    act_converter: ActionConverter | None = None,
) -> Agent:
    """The agent ``config`` describes, for these spaces (today: the DreamerV3 agent)."""
    from dreamrl.agents.dreamer import DreamerAgent

    return DreamerAgent(
        config, obs_space, act_space, obs_converter=obs_converter, act_converter=act_converter
    )
