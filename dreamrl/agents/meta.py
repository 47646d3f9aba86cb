"""What every agent's ``agent.json`` holds, whatever the agent: the format, the versions
that wrote it, the config, the spaces, the env converters and the update count.

Each kind of agent writes these beside keys of its own (a baseline adds SB3's version
and its counters) and reads them back through :func:`read_agent_meta`, which refuses a
format newer than the reader's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dreamrl import __version__
from dreamrl.config import Config, from_dict, to_dict
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.rundir import AGENT_META
from dreamrl.spaces import Space


def agent_meta(agent: Any, version: int) -> dict[str, Any]:
    """The shared keys of ``agent.json`` for ``agent`` (an object with ``config``,
    ``obs_space``, ``act_space``, ``obs_converter``, ``act_converter`` and ``updates``),
    written in format ``version``."""
    return {
        "format": version,
        "dreamrl": __version__,
        "torch": torch.__version__,
        "config": to_dict(agent.config),
        "obs_space": {k: s.to_json() for k, s in agent.obs_space.items()},
        "act_space": agent.act_space.to_json(),
        "obs_converter": agent.obs_converter.to_json() if agent.obs_converter else None,
        "act_converter": agent.act_converter.to_json() if agent.act_converter else None,
        "updates": agent.updates,
    }


@dataclass(frozen=True)
class AgentMeta:
    """``agent.json`` read back: the whole JSON object and the shared keys rebuilt."""

    raw: dict[str, Any]
    config: Config
    obs_space: dict[str, Space]
    act_space: Space
    obs_converter: ObsConverter | None
    act_converter: ActionConverter | None


def read_agent_meta(directory: Path, version: int) -> AgentMeta:
    """``directory``'s ``agent.json``; ``ValueError`` if its format is newer than
    ``version``, the newest this dreamrl reads."""
    raw = json.loads((directory / AGENT_META).read_text())
    if raw.get("format", 0) > version:
        raise ValueError(f"{directory}: agent format {raw['format']} is newer than this dreamrl")
    return AgentMeta(
        raw=raw,
        config=from_dict(raw["config"]),
        obs_space={k: Space.from_json(v) for k, v in raw["obs_space"].items()},
        act_space=Space.from_json(raw["act_space"]),
        obs_converter=ObsConverter.from_json(raw["obs_converter"]) if raw["obs_converter"] else None,
        act_converter=ActionConverter.from_json(raw["act_converter"]) if raw["act_converter"] else None,
    )
