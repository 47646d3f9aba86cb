"""Agents: what the training loop trains. :mod:`.base` says what the loop asks of one;
:mod:`.dreamer` is the DreamerV3 agent; :func:`make_agent` builds the one a config names.

:data:`TRAINERS` names, per ``agent.kind``, the function that trains that kind of agent
into a run dir: ``dreamer`` is dreamrl's own loop; an agent with a loop of its own (a
model-free baseline) is another entry, so ``dreamrl train`` and ``dreamrl compare`` train
every kind through :func:`trainer_for` and never branch on it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

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


# agent.kind -> "module:function" training a run dir as dreamrl.run.train.train does:
# fn(config, run_dir, *, hooks=..., progress=...). Imported only when that kind trains.
TRAINERS: dict[str, str] = {
    "dreamer": "dreamrl.run.train:train",
}


def trainer_for(config: Config) -> Callable[..., Any]:
    """The function that trains ``config.agent.kind`` (see :data:`TRAINERS`)."""
    try:
        target = TRAINERS[config.agent.kind]
    except KeyError:
        known = ", ".join(sorted(TRAINERS))
        raise ValueError(
            f"agent.kind={config.agent.kind!r} is not an agent dreamrl knows ({known})"
        ) from None
    module, _, name = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn
