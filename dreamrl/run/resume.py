"""Resuming a run: what must match, and how the envs are brought back to where they were.

:func:`restore` is the one way back: it restores the agent, the replay, the loop's
counters and the envs from a checkpoint. A run dir is resumed only with the config it
was made with, up to the settings in :data:`RESUMABLE`, and only with an env whose
observation and action spaces match the checkpoint's; anything else stops before a
single file is written, naming each field with its old and new value.

The envs cannot be saved, but they can be replayed: every training episode starts
from a seed that is a function of (run seed, env, episode number), and the replay
holds every action taken since. Restarting the current episode from its seed and
replaying its actions brings a deterministic env back to the exact state it was in at
the checkpoint. The replayed observations are compared with the stored ones; if they
differ (an env that is not deterministic), the envs start fresh episodes instead and
the run says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dreamrl import config as cfglib
from dreamrl.agents.base import Agent, DataParallel
from dreamrl.config import Config, ConfigError
from dreamrl.envs.pool import EnvPool, ReplayMismatchError, stack
from dreamrl.replay import Replay
from dreamrl.run.checkpoint import load_loop_state, load_loop_tensors
from dreamrl.run.logging import drop_records_after
from dreamrl.run.state import LoopState
from dreamrl.rundir import AGENT_META, AGENT_WEIGHTS, RunDir
from dreamrl.spaces import Space

# Rank r's agent tensors (its generators) sit in its loop tensors under this prefix.
REPLICA_PREFIX = "agent."

# Settings that may change when a run is resumed: they shape how long, how fast and
# how visibly the run goes on, never what it learns (compute.compile and compute.codec_chunk
# change float rounding only).
RESUMABLE = (
    "run.steps",
    "run.log_every",
    "run.save_every",
    "run.eval_every",
    "run.eval_eps",
    "run.eval_envs",
    "compute.threads",
    "compute.compile",
    "compute.codec_chunk",
    "run.keep_checkpoints",
    "run.env_workers",
    "run.env_timeout",
    "run.env_crash_loop",
    "run.env_crash_steps",
    "run.env_failure_rate",
    "run.env_failure_window",
    "run.skip_limit",
    "run.updates",
    "offline.finetune",
    "offline.eval_every",
)


def check_config(run_dir: Path, config: Config) -> Config | None:
    """The config saved in ``run_dir`` (None for a new run); ConfigError if resuming
    with ``config`` would change anything outside :data:`RESUMABLE`."""
    path = RunDir(run_dir).config
    if not path.exists():
        return None
    saved = cfglib.from_dict(json.loads(path.read_text()))
    refused = {k: v for k, v in cfglib.diff(saved, config).items() if k not in RESUMABLE}
    if refused:
        lines = [f"  {k}: {old!r} -> {new!r}" for k, (old, new) in refused.items()]
        raise ConfigError(
            f"{run_dir} holds a run with a different config; resuming would change:\n"
            + "\n".join(lines)
            + "\nUse a new --logdir, or rerun with the original settings (only "
            + ", ".join(RESUMABLE)
            + " may change on resume)."
        )
    return saved


def check_spaces(ckpt: Path, obs_space: dict[str, Space], act_space: Space) -> None:
    """ConfigError naming every observation/action field that differs from the
    checkpoint's (a different env, or an env that changed)."""
    meta = json.loads((ckpt / AGENT_META).read_text())
    old_obs = {k: Space.from_json(v) for k, v in meta["obs_space"].items()}
    old_act = Space.from_json(meta["act_space"])
    changes = []
    for key in sorted(set(old_obs) | set(obs_space)):
        old, new = old_obs.get(key), obs_space.get(key)
        if old != new:
            changes.append(f"  obs_space.{key}: {_space(old)} -> {_space(new)}")
    if old_act != act_space:
        changes.append(f"  act_space: {_space(old_act)} -> {_space(act_space)}")
    if changes:
        raise ConfigError(
            f"the env does not match the checkpoint {ckpt.name} it would resume from:\n" + "\n".join(changes)
        )


def check_ranks(ckpt: Path, ranks: int) -> None:
    """ConfigError, naming both numbers, if checkpoint ``ckpt`` was written by a job of
    another number of ranks than ``ranks``: each rank's envs and replay shard are its own,
    so a job of another size cannot continue the run."""
    saved = int(load_loop_state(ckpt).get("ranks", 1))
    if saved != ranks:
        run_dir = ckpt.parent.parent
        raise ConfigError(
            f"{run_dir} was trained by {saved} rank{'s' * (saved != 1)} (checkpoint {ckpt.name}); this job "
            f"has {ranks}. Resume it with --ranks {saved} (torchrun: {saved} processes in all), "
            "or train into a new --logdir."
        )


def _space(space: Space | None) -> str:
    if space is None:
        return "(absent)"
    kind = f", {space.classes} classes" if space.discrete else ""
    return f"{space.dtype}{list(space.shape)}{kind}"


@dataclass
class EpisodePlan:
    """How to bring one env back: start ``episode`` and replay ``actions``, which
    should reproduce ``expected`` (stored observations, one per step from the reset)."""

    episode: int
    actions: np.ndarray
    expected: dict[str, np.ndarray]
    reward: float  # return so far, for the episode statistics
    length: int


def plan_stream(
    replay: Replay, stream: int, episodes_started: int, obs_keys: list[str]
) -> EpisodePlan | None:
    """The plan for env ``stream``, or None when its current episode is no longer
    fully held by the replay (then it cannot be replayed)."""
    count = int(replay.count[stream])
    empty = {k: replay.data[k][stream, :0] for k in obs_keys}
    no_actions = replay.data["action"][stream, :0]
    if count == 0 or replay.data["is_last"][stream, (count - 1) % replay.slots]:
        return EpisodePlan(episodes_started, no_actions, empty, 0.0, 0)  # next: a fresh reset
    oldest = int(replay.oldest()[stream])
    positions = np.arange(oldest, count)
    firsts = positions[replay.data["is_first"][stream, positions % replay.slots]]
    if not len(firsts):
        return None
    idx = np.arange(int(firsts[-1]), count) % replay.slots
    rewards = replay.data["reward"][stream, idx]
    return EpisodePlan(
        episodes_started - 1,
        replay.data["action"][stream, idx],
        {k: replay.data[k][stream, idx] for k in obs_keys},
        float(rewards.sum()),
        len(idx),
    )


@dataclass
class Resumed:
    """Where a restored run stands: its counters and, when the envs were replayed to the
    checkpoint, the step to act on next with its policy state and episode statistics."""

    state: LoopState
    obs: dict[str, np.ndarray] | None = None  # None: the envs start fresh episodes
    policy_state: Any = None
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def fresh(cls, envs: int, state: LoopState | None = None) -> Resumed:
        """A run of ``envs`` envs at ``state`` (default: its start), each env to reset."""
        state = state or LoopState()
        if not state.env_episodes:
            state.env_episodes = [0] * envs
        return cls(state, returns=np.zeros(envs), lengths=np.zeros(envs, np.int64))


def restore(ckpt: Path, agent: Agent, replay: Replay, pool: EnvPool, out: TextIO, rank: int = 0) -> Resumed:
    """Bring ``agent``, ``replay`` and the envs of ``pool`` back to checkpoint ``ckpt``;
    in data-parallel training, as rank ``rank`` left them (its loop, generators, replay
    shard and envs; the weights are every rank's)."""
    resumed = restore_learner(ckpt, agent, replay, pool.size, out, rank)
    _restore_envs(resumed, agent, replay, pool, load_loop_tensors(ckpt, rank), out)
    return resumed


def restore_learner(
    ckpt: Path, agent: Agent, replay: Replay, envs: int, out: TextIO, rank: int = 0
) -> Resumed:
    """Bring ``agent``, ``replay`` and the loop's counters back to checkpoint ``ckpt`` (as
    rank ``rank`` left them), and nothing of the envs: all that training without them
    (from a dataset) needs."""
    from safetensors.torch import load_file

    meta = json.loads((ckpt / AGENT_META).read_text())
    agent.restore(load_file(str(ckpt / AGENT_WEIGHTS)), meta)
    if rank:
        assert isinstance(agent, DataParallel)
        prefix = REPLICA_PREFIX
        tensors = load_loop_tensors(ckpt, rank)
        agent.restore_replica({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    resumed = Resumed.fresh(envs, LoopState.from_json(load_loop_state(ckpt, rank)))
    state = resumed.state
    loaded = replay.load(until=state.replay.get("count"))
    replay.restore(state.replay)
    print(
        f"Resuming from {ckpt.name}: {state.env_steps:,} env steps, "
        f"{agent.updates:,} updates, {loaded:,} replay steps loaded.",
        file=out,
    )
    if replay.dropped_chunks:
        print(f"Discarded {replay.dropped_chunks} replay chunk(s) written after that checkpoint.", file=out)
    run = RunDir.of(ckpt)
    if rank == 0 and run is not None:  # the one rank that writes the metrics
        records = drop_records_after(run.path, state.env_steps, agent.updates)
        if records:
            print(f"Discarded {records} metrics record(s) written after that checkpoint.", file=out)
    for problem in replay.bad_chunks:
        print(f"warning: skipped a damaged replay chunk: {problem}", file=out)
    return resumed


def _restore_envs(
    resumed: Resumed, agent: Agent, replay: Replay, pool: EnvPool, tensors: dict[str, Any], out: TextIO
) -> None:
    """Replay each env's current episode to where the checkpoint left it, or, where that
    cannot be done exactly, start every env on a fresh episode."""
    state = resumed.state
    keys = list(pool.obs_space)
    plans = [plan_stream(replay, i, state.env_episodes[i], keys) for i in range(len(state.env_episodes))]
    policy_state = agent.policy_state_from_tensors(tensors)
    if all(p is not None for p in plans) and policy_state is not None:
        try:
            steps = [
                pool.fast_forward(i, p.episode, list(p.actions), p.expected)  # type: ignore[union-attr]
                for i, p in enumerate(plans)
            ]
        except ReplayMismatchError as e:
            print(
                f"The envs did not replay their episodes exactly ({e}); they start fresh episodes, "
                "so this run will not match an uninterrupted one step for step.",
                file=out,
            )
        else:
            resumed.obs = stack(steps)
            resumed.policy_state = policy_state
            resumed.returns[:] = [p.reward for p in plans]  # type: ignore[union-attr]
            resumed.lengths[:] = [p.length for p in plans]  # type: ignore[union-attr]
            return
    for i, episodes in enumerate(state.env_episodes):
        pool.start_fresh(i, episodes)
