"""Training from a dataset: the world model and the actor-critic learn with no env step.

:func:`train_offline` is :func:`dreamrl.run.train.train`'s counterpart for a run whose
data is a dataset (:mod:`dreamrl.datasets`: a Minari dataset or a dreamrl run dir). It
is handed the same factories and reuses the same parts (the agent, the replay, the
logger, checkpoints, resume, evaluation); only the loop is its own, since nothing in it
steps an env:

1. check, before anything is written: the config against a saved one, the dataset's
   spaces against the env's, every episode (its boundaries, its values), its size
   against free memory and disk;
2. fill the run dir's replay with the dataset's episodes (chunk files like any replay's,
   so that a resumed or fine-tuned run finds them there), then checkpoint, which marks
   the fill as done;
3. learn: ``run.updates`` updates on uniformly sampled sequences; log every
   ``run.log_every`` seconds, evaluate every ``offline.eval_every`` updates in the env
   the dataset names (when it can be made), checkpoint every ``run.save_every`` seconds
   and at the end;
4. with ``offline.finetune``, go on online: :func:`~dreamrl.run.train.train` on the same
   run dir resumes from that checkpoint, with the dataset kept in the replay.

The checkpoints of steps 2 and 3 are taken at env step 0, the loop's counters say how
far offline training got (``LoopState.offline_updates``), and rerunning resumes from
there. Metrics records are at ``step`` 0 (env steps) and carry ``train/updates``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from dreamrl.agents import make_agent as make_default_agent
from dreamrl.agents.base import Agent
from dreamrl.config import Config, ConfigError, to_dict
from dreamrl.datasets import Dataset, open_dataset
from dreamrl.datasets.checks import Survey, assign_streams, check_episode, check_fits, check_spaces
from dreamrl.envs import make_env
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.replay import CHUNK_NAME, Replay
from dreamrl.run import resume as resumelib
from dreamrl.run.allocator import release_free_memory
from dreamrl.run.checkpoint import (
    load_loop_state,
    remove_partial_saves,
    resume_point,
    save_checkpoint,
)
from dreamrl.run.disk import write_atomic
from dreamrl.run.errors import RunError
from dreamrl.run.evaluate import eval_line, eval_metrics, eval_seeds
from dreamrl.run.interrupt import StopRequest, stop_on_signals
from dreamrl.run.lock import exclusive
from dreamrl.run.logging import MetricsLogger
from dreamrl.run.machine import record_session
from dreamrl.run.progress import Progress
from dreamrl.run.session import Session, check_weights_finite
from dreamrl.run.state import LoopState
from dreamrl.run.train import (
    AgentMaker,
    EnvMaker,
    Hooks,
    Logger,
    LoggerMaker,
    Trained,
    replay_capacity,
    train,
)
from dreamrl.rundir import AGENT_META, RunDir
from dreamrl.spaces import Space, replay_spaces

# (config, replay spaces, directory, the dataset's steps per stream) -> the replay.
DatasetReplayMaker = Callable[[Config, dict[str, Space], Path, Sequence[int]], Replay]
DatasetOpener = Callable[[str, Config], Dataset]
NO_HOOKS = Hooks()


def make_dataset_replay(
    config: Config, spaces: dict[str, Space], directory: Path, dataset_steps: Sequence[int]
) -> Replay:
    """The replay of a run that learns from a dataset: each of the ``run.envs`` streams
    holds its share of the dataset whole and, with ``offline.finetune``, room for its
    share of the env steps a run of ``config`` keeps (:func:`replay_capacity`)."""
    streams = config.run.envs
    online = replay_capacity(config) if config.offline.finetune else 0
    per_stream = max(dataset_steps, default=0) + -(-online // streams)
    return Replay(
        spaces,
        per_stream * streams,
        streams,
        config.batch_length,
        config.replay.online,
        config.replay.chunksize,
        directory,
        config.seed,
    )


class Learner(NamedTuple):
    """The spaces an agent is built for, and how the env's raw values map to them."""

    obs_space: dict[str, Space]
    act_space: Space
    obs_converter: ObsConverter | None
    act_converter: ActionConverter | None


def env_learner(config: Config, make_env: EnvMaker) -> Learner:
    """The spaces of the env ``config.task`` names, from one env built and closed."""
    env = make_env(config, None, "eval")
    try:
        return Learner(env.obs_space, env.act_space, env.obs_converter, env.act_converter)
    finally:
        env.close()


def checkpoint_learner(ckpt: Path) -> Learner:
    """The spaces a checkpoint's agent was built for (a run with no env to ask)."""
    meta = json.loads((ckpt / AGENT_META).read_text())
    obs_conv = meta.get("obs_converter")
    act_conv = meta.get("act_converter")
    return Learner(
        {k: Space.from_json(v) for k, v in meta["obs_space"].items()},
        Space.from_json(meta["act_space"]),
        ObsConverter.from_json(obs_conv) if obs_conv else None,
        ActionConverter.from_json(act_conv) if act_conv else None,
    )


def trainer_for_dataset(config: Config) -> Callable[..., Trained]:
    """The function that trains ``config`` from its dataset: :func:`train_offline`, for
    the agents that learn from replay (``agent.kind`` dreamer)."""
    if config.agent.kind != "dreamer":
        raise ConfigError(
            f"offline.dataset: agent.kind={config.agent.kind!r} does not learn from a dataset (dreamer does)"
        )
    return train_offline


def _saved_task(run_dir: Path) -> str:
    path = RunDir(run_dir).config
    return str(json.loads(path.read_text()).get("task", "")) if path.is_file() else ""


def train_offline(
    config: Config,
    run_dir: str | Path,
    make_env: EnvMaker = make_env,
    make_agent: AgentMaker = make_default_agent,
    make_replay: DatasetReplayMaker = make_dataset_replay,
    make_logger: LoggerMaker = MetricsLogger,
    hooks: Hooks = NO_HOOKS,
    out: TextIO | None = None,
    progress: bool = True,
    open_dataset: DatasetOpener = open_dataset,
) -> Trained:
    """Train (or resume training) ``config`` in ``run_dir`` from ``offline.dataset`` for
    ``run.updates`` updates, then, with ``offline.finetune``, online in ``task`` until
    ``run.steps`` env steps. ``task`` may be '': the env the dataset names is used when it
    can be made, and evaluation is left out when none can. ``out``: where it reports
    (``sys.stdout`` as it is at the call)."""
    out = out or sys.stdout
    run_dir = Path(run_dir)
    if not config.offline.dataset:
        raise ConfigError("offline.dataset: no dataset given (dreamrl train --dataset ID_OR_PATH)")
    if not config.task and _saved_task(run_dir):
        config = dataclasses.replace(config, task=_saved_task(run_dir))  # as the CLI resumes
    parts = Factories(make_env, make_agent, make_replay, make_logger, open_dataset)
    config, state, agent = _learn_offline(config, run_dir, parts, hooks, out, progress)
    if not config.offline.finetune:
        assert agent is not None
        return Trained(state, agent)
    del agent  # the online loop builds its own from the checkpoint just written
    held_steps = state.dataset_steps
    return train(
        config,
        run_dir,
        make_env=make_env,
        make_agent=make_agent,
        make_replay=lambda c, s, d: make_replay(c, s, d, held_steps),
        make_logger=make_logger,
        hooks=hooks,
        out=out,
        progress=progress,
    )


class Factories(NamedTuple):
    """What :func:`train_offline` was handed to build its parts with."""

    make_env: EnvMaker
    make_agent: AgentMaker
    make_replay: DatasetReplayMaker
    make_logger: LoggerMaker
    open_dataset: DatasetOpener


def _learn_offline(
    config: Config, run_dir: Path, parts: Factories, hooks: Hooks, out: TextIO, progress: bool
) -> tuple[Config, LoopState, Agent | None]:
    """Check, fill the replay (a fresh run) or restore (a resumed one), and train the
    updates still owed. Returns the config with its env, the loop's counters, and the agent
    (None when the offline part was done before and the run goes on online)."""
    with contextlib.ExitStack() as held:
        locked = run_dir.is_dir()
        if locked:
            held.enter_context(exclusive(run_dir))
        ckpt = resume_point(run_dir, out)
        dataset = parts.open_dataset(config.offline.dataset, config) if ckpt is None else None
        config, learner = _resolve_env(config, dataset, ckpt, parts.make_env, out)
        resumelib.check_config(run_dir, config)
        saved = None if ckpt is None else LoopState.from_json(load_loop_state(ckpt))
        if ckpt is not None:
            resumelib.check_spaces(ckpt, learner.obs_space, learner.act_space)
        done = saved is not None and (saved.env_steps > 0 or saved.offline_updates >= config.run.updates)
        if done and config.offline.finetune:
            assert saved is not None
            return config, saved, None  # the online loop checks, writes and resumes for itself
        spaces = replay_spaces(learner.obs_space, learner.act_space)
        files = RunDir(run_dir)
        plan = None if dataset is None else survey(dataset, spaces, config, files.replay, out, progress)
        # Every check has passed: only now does anything get written.
        run_dir.mkdir(parents=True, exist_ok=True)
        if not locked:
            held.enter_context(exclusive(run_dir))
        write_atomic(files.config, json.dumps(to_dict(config), indent=1))
        for path in remove_partial_saves(run_dir):
            print(f"Removed {path.name}: a checkpoint save that never finished.", file=out)
        agent = parts.make_agent(
            config,
            learner.obs_space,
            learner.act_space,
            obs_converter=learner.obs_converter,
            act_converter=learner.act_converter,
        )
        if plan is not None:
            assert dataset is not None
            _remove_chunks(files.replay)  # of an earlier start that never reached its checkpoint
            replay = parts.make_replay(config, spaces, files.replay, plan.held)
            state = LoopState(dataset_steps=list(plan.held))
            fill_replay(replay, dataset, plan, out, progress)
            _save(run_dir, config, agent, replay, state)
        else:
            assert ckpt is not None and saved is not None
            replay = parts.make_replay(config, spaces, files.replay, saved.dataset_steps)
            state = resumelib.restore_learner(ckpt, agent, replay, config.run.envs, out).state
        if done:
            print(
                f"Offline training was done: {state.offline_updates:,} updates (run.updates="
                f"{config.run.updates:,}); raise run.updates for more, or add --env ID to go on online.",
                file=out,
            )
            return config, state, agent
        _describe(config, agent, replay, out)
        record_session(run_dir, state.env_steps, config.compute.device)
        interrupt = held.enter_context(stop_on_signals())
        loop = OfflineParts(agent, replay, parts.make_logger(run_dir), parts.make_env)
        state = OfflineTrainer(config, run_dir, loop, hooks, state, out, progress, interrupt).run()
        return config, state, agent


def _resolve_env(
    config: Config, dataset: Dataset | None, ckpt: Path | None, make_env: EnvMaker, out: TextIO
) -> tuple[Config, Learner]:
    """The config with the env to evaluate in (the dataset's when none is named and it can
    be made; none otherwise), and the spaces the agent is built for, checked against the
    dataset's."""
    named = bool(config.task)
    if not named and dataset is not None and dataset.env_id:
        config = dataclasses.replace(config, task=dataset.env_id)
    learner: Learner | None = None
    if config.task:
        try:
            learner = env_learner(config, make_env)
        except ConfigError as e:
            if named:
                raise
            print(f"Not evaluating: the dataset's env {config.task} cannot be made here ({e}).", file=out)
            config = dataclasses.replace(config, task="")
    if config.offline.finetune and learner is None:
        raise ConfigError("offline.finetune: no env to go on training in (give --env ID)")
    if learner is not None and dataset is not None:
        hint = dataset.hint(config.env)
        check_spaces(dataset, config.task, learner.obs_space, learner.act_space, learner.act_converter, hint)
    if learner is not None:
        return config, learner
    if dataset is not None:
        return config, Learner(
            dataset.obs_space, dataset.act_space, dataset.obs_converter, dataset.act_converter
        )
    assert ckpt is not None
    return config, checkpoint_learner(ckpt)


class Plan(NamedTuple):
    """Where the dataset's episodes go: a stream per episode, and each stream's steps."""

    survey: Survey
    streams: list[int]
    held: list[int]


def survey(
    dataset: Dataset, spaces: dict[str, Space], config: Config, directory: Path, out: TextIO, progress: bool
) -> Plan:
    """Check the dataset's size against memory and disk, then every episode, reading it
    through once; where its episodes will go in the replay."""
    online = replay_capacity(config) if config.offline.finetune else 0
    check_fits(dataset.source, dataset.max_steps(), spaces, directory, online)
    found = Survey()
    for episode in _progress(dataset.episodes(), dataset.max_steps(), "Checking", out, progress):
        check_episode(episode, spaces)
        found.add(episode)
    for note in dataset.notes():
        print(f"note: {note}", file=out)
    if not found.lengths:
        raise ConfigError(f"dataset {dataset.source}: holds no whole episode")
    streams, held = assign_streams(found.lengths, config.run.envs)
    if max(held) < config.batch_length:
        raise ConfigError(
            f"dataset {dataset.source}: {found.steps:,} steps in {len(held)} streams (run.envs) leave "
            f"none as long as a training sequence (batch_length={config.batch_length})"
        )
    return Plan(found, streams, held)


def _progress(episodes: Iterator[Any], total: int, what: str, out: TextIO, enabled: bool) -> Iterator[Any]:
    """``episodes`` as they come, with a progress line or bar of the steps gone through."""
    if enabled:
        print(f"{what} the dataset's episodes...", file=out, flush=True)
    bar = Progress(total, 0, enabled=enabled, out=out, unit="dataset steps")
    done = 0
    try:
        for episode in episodes:
            yield episode
            done += len(episode)
            bar.update(done, math.nan, math.nan)
    finally:
        bar.close()


def fill_replay(replay: Replay, dataset: Dataset, plan: Plan, out: TextIO, progress: bool) -> None:
    """Put every episode of ``dataset`` into the stream ``plan`` chose for it, and write
    the replay's chunk files."""
    count = 0
    for i, episode in enumerate(_progress(dataset.episodes(), plan.survey.steps, "Storing", out, progress)):
        if i >= len(plan.streams) or len(episode) != plan.survey.lengths[i]:
            raise RunError(f"dataset {dataset.source} changed while it was read (at {episode.name})")
        replay.extend(plan.streams[i], episode.steps)
        count += 1
    if count != len(plan.streams):
        raise RunError(
            f"dataset {dataset.source} changed while it was read ({count} episodes, not {len(plan.streams)})"
        )
    replay.flush(force=True)
    found = plan.survey
    print(
        f"Dataset {dataset.source}: {len(found.lengths):,} episodes ({found.terminal:,} terminal, "
        f"{found.truncated:,} truncated), {found.steps:,} steps, in {len(plan.held)} replay streams.",
        file=out,
    )


def _remove_chunks(directory: Path) -> None:
    if directory.is_dir():
        for path in directory.iterdir():
            if CHUNK_NAME.match(path.name.removesuffix(".tmp")):
                path.unlink(missing_ok=True)


def _save(run_dir: Path, config: Config, agent: Agent, replay: Replay, state: LoopState) -> None:
    """Checkpoint everything a resume needs (at the run's env step); weights that are not
    finite never are."""
    check_weights_finite(agent, run_dir, f"after {agent.updates:,} updates")
    replay.flush(force=True)
    state.replay = replay.state()
    save_checkpoint(run_dir, state.env_steps, agent, asdict(state), config.run.keep_checkpoints)


class OfflineParts(NamedTuple):
    """What the offline loop drives, built by :func:`train_offline` from its factories."""

    agent: Agent
    replay: Replay
    logger: Logger
    make_env: EnvMaker  # for evaluation's envs


class OfflineTrainer(Session):
    """The updates of one offline session: train, log, evaluate, save."""

    # No env steps offline: the summary leaves out the parts that act and step envs.
    PARTS_NOT_SHOWN = ("env", "act")

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        parts: OfflineParts,
        hooks: Hooks,
        state: LoopState,
        out: TextIO,
        progress: bool,
        interrupt: StopRequest,
    ):
        bar = Progress(config.run.updates, state.offline_updates, enabled=progress, out=out, unit="updates")
        super().__init__(config, run_dir, hooks, out, state, *parts, interrupt, bar)
        self.log_mark = state.offline_updates

    def train_step(self) -> None:
        """One update on a uniform sample of the replay."""
        state, run = self.state, self.config.run
        result = self.agent.train_step(self.replay.sample(self.config.batch_size))
        state.offline_updates += 1
        self.train_mean.add(result.metrics)
        if run.release_every and state.offline_updates % run.release_every == 0:
            release_free_memory()
        self._count_skipped(result)

    def _position(self) -> str:
        return f"at offline update {self.state.offline_updates:,}"

    def _unlogged(self) -> bool:
        return self.log_mark != self.state.offline_updates

    def log(self, now: float) -> None:
        dt = max(now - self.last_log, 1e-9)
        metrics: dict[str, Any] = self.train_mean.result()
        metrics["train/updates"] = self.agent.updates
        metrics["fps/train"] = (self.state.offline_updates - self.log_mark) / dt
        metrics["replay/steps"] = float(len(self.replay))
        metrics["train/skipped_updates"] = float(self.state.skipped_updates)
        self._write_log(now, dt, metrics)
        self.log_mark = self.state.offline_updates

    def _record(self, metrics: Mapping[str, Any]) -> None:
        self.logger.write(self.state.env_steps, metrics, offline_updates=self.state.offline_updates)

    def evaluate(self) -> None:
        """The deterministic policy on the next fresh evaluation seeds, in the env the
        config names (none: nothing to evaluate in)."""
        run, state = self.config.run, self.state
        state.offline_last_eval = state.offline_updates
        if not run.eval_eps or not self.config.task:
            return
        seeds = eval_seeds(self.config.seed, state.eval_episodes, run.eval_eps)
        result = self._evaluate_episodes(seeds)
        state.eval_episodes += run.eval_eps
        state.last_eval_return = result.mean
        self._record(
            {**eval_metrics(result), "train/updates": self.agent.updates, "time/elapsed": self.elapsed()}
        )
        self.bar.note(eval_line(result, f"after {self.agent.updates:,} updates", run.eval_max_steps))
        self._after_eval(result, {"train/updates": self.agent.updates})

    def save(self) -> None:
        self.state.elapsed = self.state.offline_elapsed = self.elapsed()
        _save(self.run_dir, self.config, self.agent, self.replay, self.state)
        self.last_save = time.time()

    def _loop(self) -> None:
        """Update until ``run.updates`` (or ``hooks.stop``), logging, evaluating and saving."""
        run, state, every = self.config.run, self.state, self.config.offline.eval_every
        stop = self.hooks.stop
        while state.offline_updates < run.updates:
            self.interrupt.check()
            with self.timed("train"):
                self.train_step()
            self.bar.update(state.offline_updates, math.nan, state.last_eval_return)
            now = time.time()
            if now - self.last_log >= run.log_every:
                self.log(now)
            if every and state.offline_updates - state.offline_last_eval >= every:
                with self.timed("eval"):
                    self.evaluate()
                if stop is not None and stop(state):
                    self.bar.note(f"stopping after {self.agent.updates:,} updates: the stop condition holds")
                    break
            if now - self.last_save >= run.save_every:
                with self.timed("save"):
                    self.save()
        if state.offline_last_eval != state.offline_updates or not state.eval_episodes:
            with self.timed("eval"):
                self.evaluate()

    def _done_line(self) -> str:
        where = (
            f"Last eval return {self.state.last_eval_return:.1f}."
            if self.config.task
            else "No env to evaluate in."
        )
        return (
            f"Done: {self.agent.updates:,} updates from dataset {self.config.offline.dataset} in "
            f"{self.elapsed() / 60:.1f} min, no env step. {where}"
        )


def _describe(config: Config, agent: Agent, replay: Replay, out: TextIO) -> None:
    every = config.offline.eval_every
    where = (
        f"evaluation in {config.task} every {every:,} updates and at the end"
        if every
        else f"evaluation in {config.task} at the end"
    )
    if not config.task or not config.run.eval_eps:
        where = "no evaluation"
    print(
        f"Agent: {agent.param_count():,} parameters on {agent.device}; presets "
        f"{', '.join(config.presets) or 'none'}.",
        file=out,
    )
    print(
        f"Training offline: {config.run.updates:,} updates of {config.batch_size}x{config.batch_length} "
        f"from the {len(replay):,} replay steps, no env step; {where}.",
        file=out,
    )
