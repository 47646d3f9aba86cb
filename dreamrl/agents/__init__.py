"""Agents: what the training loop trains. :mod:`.base` says what the loop asks of one;
:mod:`.dreamer` is the DreamerV3 agent; :func:`make_agent` builds the one a config names;
:func:`load_agent` reads back a saved agent of any kind (:data:`AGENTS`).

:data:`TRAINERS` names, per ``agent.kind``, the function that trains that kind of agent
into a run dir: ``dreamer`` is dreamrl's own loop; an agent with a loop of its own (a
model-free baseline) is another entry, so ``dreamrl train`` and ``dreamrl compare`` train
every kind through :func:`trainer_for` and never branch on it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
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
    "ppo": "dreamrl.baselines.train:train",
    "sac": "dreamrl.baselines.train:train",
    "dqn": "dreamrl.baselines.train:train",
}

# agent.kind -> "module:Class" whose ``load(checkpoint_dir, device=None, act=None)`` reads
# back an agent of that kind (what `dreamrl eval` and load_agent use).
AGENTS: dict[str, str] = {
    "dreamer": "dreamrl.agents.dreamer:DreamerAgent",
    "ppo": "dreamrl.baselines.agent:BaselineAgent",
    "sac": "dreamrl.baselines.agent:BaselineAgent",
    "dqn": "dreamrl.baselines.agent:BaselineAgent",
}


# The kinds that learn a world model (agent.wm names it, diagnostics look into it); the
# others are model-free, and a report or a comparison labels them so.
WORLD_MODEL_KINDS: frozenset[str] = frozenset({"dreamer"})


def learns_world_model(kind: str) -> bool:
    """Whether an agent of ``agent.kind`` ``kind`` learns a world model."""
    return kind in WORLD_MODEL_KINDS


def _resolve(table: Mapping[str, str], kind: str) -> Any:
    try:
        target = table[kind]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ValueError(f"agent.kind={kind!r} is not an agent dreamrl knows ({known})") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def trainer_for(config: Config) -> Callable[..., Any]:
    """The function that trains ``config.agent.kind`` (see :data:`TRAINERS`)."""
    fn: Callable[..., Any] = _resolve(TRAINERS, config.agent.kind)
    return fn


def saved_kind(checkpoint: Path) -> str:
    """The ``agent.kind`` of the agent saved in checkpoint dir ``checkpoint`` (a
    checkpoint from before the setting holds a DreamerV3 agent)."""
    from dreamrl.rundir import AGENT_META

    meta = json.loads((checkpoint / AGENT_META).read_text())
    return str(meta.get("config", {}).get("agent", {}).get("kind", "dreamer"))


def load_agent(path: str | Path, device: str | None = None, act: str | None = None) -> Agent:
    """The agent a checkpoint dir holds, or a run dir's newest good checkpoint, whatever
    its kind (:data:`AGENTS`); ``act`` as in :meth:`DreamerAgent.load`. Only JSON and
    tensors are read: nothing in the files runs."""
    from dreamrl.run.checkpoint import read_newest

    def read(directory: Path) -> Agent:
        cls = _resolve(AGENTS, saved_kind(directory))
        agent: Agent = cls.load(directory, device=device, act=act)
        return agent

    return read_newest(Path(path), read)
