"""The check ``dreamrl export`` runs: the exported file acts as the library does.

The library's deterministic policy is rolled over recorded observations, its state
carried from step to step (:func:`record_env`: episodes of the run's env, a new episode
whenever one ends; :func:`record_replay`: the oldest stretch of the run's replay). The
exported file, run by its own runtime, is then fed the same observations, its state
outputs fed back as the next step's state inputs, and its actions compared with the
library's: discrete actions must be equal, continuous ones equal to float rounding
(:data:`ACTION_TOLERANCE`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dreamrl.config import ConfigError
from dreamrl.export.graph import ACTION, ENV_ACTION, IS_FIRST, PREV_ACTION, STATE, PolicyStep, state_name
from dreamrl.world_models.base import state_items

if TYPE_CHECKING:
    from dreamrl.agents.dreamer import DreamerAgent, PolicyState
    from dreamrl.export.formats import Runner

# Largest |difference| allowed between a continuous action of the file and the library's
# (actions lie in [-1, 1]; float32 rounding of a different kernel order is about 1e-6).
ACTION_TOLERANCE = 1e-4


class Recorded(NamedTuple):
    """Observations ``[{key: [1, ...], "is_first": [1]}]`` a step each, the library's
    actions for them (as ``policy`` returns them, and as the env takes them), and its
    state after each step by input name (``state_deter``, ...)."""

    obs: list[dict[str, np.ndarray]]
    actions: list[np.ndarray]
    env_actions: list[np.ndarray]
    states: list[dict[str, np.ndarray]]
    source: str  # what the observations are, for the report


@dataclass(frozen=True)
class CheckResult:
    """How the file's actions compared with the library's over ``steps`` steps."""

    runtime: str
    source: str
    steps: int
    episodes: int
    matching: int  # steps whose action and env action both matched
    max_action_diff: float  # largest |difference| of an action (discrete: 0 or more)
    max_state_diff: float  # largest |difference| of a state tensor
    first_mismatch: int | None  # the first step that did not match

    @property
    def passed(self) -> bool:
        return self.matching == self.steps

    def line(self) -> str:
        """One line for the user."""
        verdict = "equal" if self.passed else "DIFFER from"
        where = f"{self.steps} steps ({self.episodes} episodes) of {self.source}, state carried"
        text = (
            f"check: {self.runtime}'s actions {verdict} the library's on {self.matching} of {where}; "
            f"largest action difference {self.max_action_diff:.3g}, state difference "
            f"{self.max_state_diff:.3g}"
        )
        if not self.passed:
            text += f"; first differing step {self.first_mismatch}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _state_arrays(state: PolicyState) -> dict[str, np.ndarray]:
    items = {**state_items(state.model), PREV_ACTION: state.action}
    return {state_name(k): v.detach().cpu().numpy() for k, v in items.items()}


def _roll(agent: DreamerAgent, steps: list[dict[str, np.ndarray]], source: str) -> Recorded:
    """The library's policy over ``steps`` given in advance (a replay's)."""
    state = None
    actions, env_actions, states = [], [], []
    for obs in steps:
        action, state = agent.policy(obs, state, deterministic=True)
        actions.append(action)
        env_actions.append(_env_action(agent, action))
        states.append(_state_arrays(state))
    return Recorded(steps, actions, env_actions, states, source)


def _env_action(agent: DreamerAgent, action: np.ndarray) -> np.ndarray:
    conv = agent.act_converter
    if conv is None:
        return action
    return np.stack([np.asarray(conv(a)) for a in action])


def record_env(agent: DreamerAgent, steps: int, seed: int) -> Recorded:
    """``steps`` steps of the library's policy in the run's env (as ``dreamrl eval``
    makes it), episodes one after another from ``seed``."""
    from dreamrl.envs import make_env

    env = make_env(agent.config, seed, "eval")
    try:
        obs, actions, env_actions, states = [], [], [], []
        step = env.reset(seed)
        state = None
        for _ in range(steps):
            batch = {k: np.array(step[k])[None] for k in agent.obs_space}  # writable, as torch wants
            batch[IS_FIRST] = np.asarray(step["is_first"])[None]
            action, state = agent.policy(batch, state, deterministic=True)
            obs.append(batch)
            actions.append(action)
            env_actions.append(_env_action(agent, action))
            states.append(_state_arrays(state))
            step = env.step(action[0])
            if step["is_last"]:
                step = env.reset()
    finally:
        env.close()
    return Recorded(obs, actions, env_actions, states, f"the env {agent.config.task}")


def record_replay(agent: DreamerAgent, replay_dir: Path, steps: int) -> Recorded:
    """The library's policy over the first ``steps`` steps held in the replay chunks
    under ``replay_dir`` (the oldest stream's oldest contiguous chunks)."""
    from dreamrl.replay import CHUNK_NAME

    chunks = sorted(
        (int(m[1]), int(m[2]), int(m[3]), p)
        for p in (replay_dir.iterdir() if replay_dir.is_dir() else ())
        if (m := CHUNK_NAME.match(p.name))
    )
    if not chunks:
        raise ConfigError(f"--check-on replay: {replay_dir} holds no replay chunks")
    stream, end = chunks[0][0], chunks[0][1]
    keys = [*agent.obs_space, IS_FIRST]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    held = 0
    for s, start, size, path in chunks:
        if s != stream or start != end or held >= steps:
            break
        with np.load(path, allow_pickle=False) as npz:
            for k in keys:
                parts[k].append(npz[k][:size])
        held, end = held + size, start + size
    data = {k: np.concatenate(v)[:steps] for k, v in parts.items()}
    data[IS_FIRST][0] = True  # the library starts afresh, state=None, as the file does
    rows = [{k: v[t : t + 1] for k, v in data.items()} for t in range(len(data[IS_FIRST]))]
    return _roll(agent, rows, f"the replay {replay_dir}")


def compare(recorded: Recorded, runner: Runner, step: PolicyStep, runtime: str) -> CheckResult:
    """Run ``runner`` over ``recorded``'s observations, its state carried, and compare."""
    state = {t.name: np.zeros((1, *t.dims), t.dtype) for t in step.inputs if t.role == STATE}
    matching, first = 0, None
    action_diff = state_diff = 0.0
    for t, obs in enumerate(recorded.obs):
        out = runner({**obs, **state})
        diff, same = _action_diff(out[ACTION], recorded.actions[t])
        if ENV_ACTION in out:
            _, env_same = _action_diff(out[ENV_ACTION], recorded.env_actions[t])
            same = same and env_same
        action_diff = max(action_diff, diff)
        state = {name: out["next_" + name] for name in state}
        for name, value in state.items():
            lib = recorded.states[t][name]
            state_diff = max(state_diff, float(np.abs(value.astype(np.float64) - lib).max()))
        if same:
            matching += 1
        elif first is None:
            first = t
    episodes = int(sum(bool(o[IS_FIRST][0]) for o in recorded.obs))
    return CheckResult(
        runtime, recorded.source, len(recorded.obs), episodes, matching, action_diff, state_diff, first
    )


def _action_diff(ours: np.ndarray, library: np.ndarray) -> tuple[float, bool]:
    """Largest |difference| and whether the actions count as equal."""
    ours, library = np.asarray(ours), np.asarray(library)
    if ours.shape != library.shape:
        return float("inf"), False
    diff = float(np.abs(ours.astype(np.float64) - library.astype(np.float64)).max(initial=0.0))
    if np.issubdtype(library.dtype, np.integer):
        return diff, diff == 0.0
    scale = max(1.0, float(np.abs(library).max(initial=0.0)))
    return diff, diff <= ACTION_TOLERANCE * scale
