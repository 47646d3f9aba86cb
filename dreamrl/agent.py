"""The stable import for Python users: ``from dreamrl.agent import Agent``.

:class:`Agent` is the DreamerV3 agent (:mod:`dreamrl.agents.dreamer`); ``Agent.load``
reads any run dir or checkpoint dir it wrote.
"""

from __future__ import annotations

from dreamrl.agents.dreamer import DreamerAgent as Agent
from dreamrl.agents.dreamer import PolicyState

__all__ = ["Agent", "PolicyState"]
