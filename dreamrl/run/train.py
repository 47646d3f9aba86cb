"""The training loop: collect, add to replay, train at ``train_ratio``, log, evaluate, save.

:func:`train` is handed its parts as factories: the envs, the agent, the replay and the
logger, plus hooks (what to do after an evaluation, when to stop early). It knows the
agent only through :class:`dreamrl.agents.base.Agent`, so a test can hand it a dummy
agent and replay, and a new kind of agent needs no change here. Rerunning it on the same
run dir resumes from the newest good checkpoint (:func:`dreamrl.run.resume.restore`):
weights, optimiser, return normaliser, slow critic, random generators, counters, the
replay (reconciled with the checkpoint) and the envs themselves, replayed to where they
were, so that on a CPU the resumed run continues exactly as an uninterrupted one would.

What stops a run, with a message naming the cause (:class:`RunError`): a non-finite
observation, reward or action; ``run.skip_limit`` updates in a row skipped for a
non-finite loss or gradient; weights that are no longer finite (never checkpointed);
a full disk while saving (the previous checkpoint is kept).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, TextIO

import numpy as np

from dreamrl.agents import make_agent as make_default_agent
from dreamrl.agents.base import Agent, policy_metrics
from dreamrl.config import Config, to_dict
from dreamrl.envs import TRAIN_STREAM, episode_seed, make_env
from dreamrl.envs.base import Env
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.envs.pool import EnvPool, FailureBudget
from dreamrl.replay import Replay, check_capacity
from dreamrl.run import resume as resumelib
from dreamrl.run.allocator import malloc_in_use, release_free_memory
from dreamrl.run.checkpoint import remove_partial_saves, resume_point, save_checkpoint
from dreamrl.run.disk import is_disk_full, write_atomic
from dreamrl.run.distributed import Ranks
from dreamrl.run.errors import RunError
from dreamrl.run.evaluate import EvalResult, eval_line, eval_metrics, eval_seeds
from dreamrl.run.interrupt import StopRequest, stop_on_signals
from dreamrl.run.lock import exclusive
from dreamrl.run.logging import Mean, MetricsLogger
from dreamrl.run.machine import record_session
from dreamrl.run.progress import Progress
from dreamrl.run.session import Session, check_weights_finite
from dreamrl.run.session import resident_mb as resident_mb  # re-exported: imported from here elsewhere
from dreamrl.run.session import time_split as time_split  # re-exported: imported from here elsewhere
from dreamrl.run.state import LoopState
from dreamrl.rundir import RunDir
from dreamrl.spaces import STEP_KEYS, Space, replay_spaces

# (config, seed, mode) -> env, as make_env: mode is 'train' for the envs that collect and
# 'eval' for evaluation's (DMC's env.dmc.eval_distractor applies to those).
EnvMaker = Callable[[Config, "int | None", str], Env]


class AgentMaker(Protocol):
    """Builds the agent for the envs' spaces (as :func:`dreamrl.agents.make_agent`)."""

    def __call__(
        self,
        config: Config,
        obs_space: Mapping[str, Space],
        act_space: Space,
        obs_converter: ObsConverter | None = None,
        act_converter: ActionConverter | None = None,
    ) -> Agent: ...


# (config, replay spaces, directory) -> the replay the loop fills and samples.
ReplayMaker = Callable[[Config, dict[str, Space], Path], Replay]


class Logger(Protocol):
    """Where the loop's metrics go: one record per call, each with its env step (and, for
    training from a dataset, the updates taken: :meth:`MetricsLogger.write`)."""

    def write(self, step: int, metrics: Mapping[str, Any], offline_updates: int | None = None) -> None: ...

    def close(self) -> None: ...


LoggerMaker = Callable[[Path], Logger]
# Called after each periodic evaluation with (agent, its result, env step); what it
# returns is logged at that step. The CLI hands in the diagnostics this way.
EvalHook = Callable[[Agent, EvalResult, int], "Mapping[str, float] | None"]


@dataclass(frozen=True)
class Hooks:
    """What the loop is asked to do besides training."""

    after_eval: Sequence[EvalHook] = ()
    # Asked after each evaluation; True ends the run there (a benchmark's early exit).
    stop: Callable[[LoopState], bool] | None = None
    # Steps of each evaluation episode the hooks need recorded (diagnostics cut windows
    # from them); 0: none. Bounded so that evaluation's memory stays flat.
    record_steps: int = 0

    def after_evaluation(
        self, agent: Agent, result: EvalResult, step: int, note: Callable[[str], None], out: TextIO
    ) -> list[Mapping[str, float]]:
        """What each of ``after_eval`` returns for the evaluation at env step ``step``
        (those that return figures).

        A hook watches the run (the diagnostics): one that fails has its traceback
        printed to ``out`` and a warning said through ``note``, and the others and the
        training go on, as a run of hours is not to end on an observer's error. A full
        disk still ends the run, as it does anywhere else."""
        figures = []
        for hook in self.after_eval:
            try:
                metrics = hook(agent, result, step)
            except Exception as e:
                if isinstance(e, OSError) and is_disk_full(e):
                    raise
                print(traceback.format_exc(), end="", file=out, flush=True)
                name = getattr(hook, "__name__", type(hook).__name__)
                note(
                    f"warning: the hook {name} after the evaluation at {step:,} env steps failed "
                    f"({type(e).__name__}: {e}); training goes on without its figures"
                )
                continue
            if metrics:
                figures.append(metrics)
        return figures


class Trained(NamedTuple):
    """What :func:`train` gives back: the loop's final counters and the trained agent."""

    state: LoopState
    agent: Agent

    @property
    def updates(self) -> int:
        return self.agent.updates


def make_replay(config: Config, spaces: dict[str, Space], directory: Path) -> Replay:
    """The on-disk sequence replay of ``config.replay`` for ``config.run.envs`` streams."""
    return Replay(
        spaces,
        replay_capacity(config),
        config.run.envs,
        config.batch_length,
        config.replay.online,
        config.replay.chunksize,
        directory,
        config.seed,
    )


def updates_due(state: LoopState, updates: int, config: Config, ranks: int = 1) -> int:
    """Train steps owed so that replayed steps / env steps tracks ``train_ratio``, with
    ``updates`` applied so far (skipped ones count as done: they were attempted; those of
    offline training before the first env step are not owed by env steps). With several
    ``ranks`` an update replays a batch on each and env steps count all of theirs."""
    if state.train_start < 0:
        return 0
    per_step = config.run.train_ratio / (ranks * config.batch_size * config.batch_length)
    owed = 1 + math.floor((state.env_steps - state.train_start) * per_step)
    return max(0, owed - updates - state.skipped_updates + state.offline_updates)


def replay_capacity(config: Config) -> int:
    """Steps the replay must hold: its size, or the whole run if that is shorter."""
    slack = config.run.envs * config.batch_length  # the per-stream rings round up
    return int(min(config.replay.size, config.run.steps + slack))


def train(
    config: Config,
    run_dir: str | Path,
    make_env: EnvMaker = make_env,
    make_agent: AgentMaker = make_default_agent,
    make_replay: ReplayMaker = make_replay,
    make_logger: LoggerMaker = MetricsLogger,
    hooks: Hooks = Hooks(),
    out: TextIO | None = None,
    progress: bool = True,
    ranks: Ranks | None = None,
) -> Trained:
    """Train (or resume training) ``config`` in ``run_dir`` until ``run.steps``, or until
    ``hooks.stop(state)`` says so after an evaluation.

    Every check (config against the saved one, spaces against the checkpoint, the
    replay's size against memory and disk) runs before anything is written, and the run
    dir is locked against a second writer for as long as this runs (:mod:`.lock`).
    ``ranks``: this process's place in a data-parallel job (:mod:`.distributed`).
    ``out``: where it reports (``sys.stdout`` as it is at the call)."""
    out = out or sys.stdout
    run_dir = Path(run_dir)
    resumelib.check_config(run_dir, config)
    run = config.run
    ranks = ranks or Ranks()
    seed_of = functools.partial(_episode_seed, config.seed, ranks.first_env(run.envs))
    factories = [functools.partial(_env_factory, make_env, config, seed_of(i, 0)) for i in range(run.envs)]
    with contextlib.ExitStack() as held:
        locked = ranks.writer and run_dir.is_dir()
        if locked:  # an existing run: a second writer is refused before anything else
            held.enter_context(exclusive(run_dir))
        pool = held.enter_context(
            EnvPool(
                factories,
                run.env_workers,
                timeout=run.env_timeout,
                budget=FailureBudget(
                    run.env_crash_loop, run.env_crash_steps, run.env_failure_rate, run.env_failure_window
                ),
                episode_seed=seed_of,
            )
        )
        interrupt = held.enter_context(stop_on_signals(deferred=ranks.size > 1))
        agent = make_agent(
            config,
            pool.obs_space,
            pool.act_space,
            obs_converter=pool.obs_converter,
            act_converter=pool.act_converter,
        )
        ranks.join(agent)
        ckpt = resume_point(run_dir, out)
        if ckpt is not None:
            resumelib.check_spaces(ckpt, pool.obs_space, pool.act_space)
            resumelib.check_ranks(ckpt, ranks.size)
        spaces = replay_spaces(pool.obs_space, pool.act_space)
        files = RunDir(run_dir)
        check_capacity(spaces, replay_capacity(config), ranks.shard(run_dir))
        # Every check has passed: only now does anything get written.
        run_dir.mkdir(parents=True, exist_ok=True)
        if ranks.writer and not locked:
            held.enter_context(exclusive(run_dir))
        held.enter_context(ranks.settle(run_dir, ckpt))  # every rank past its checks, and locked
        if ranks.writer:
            write_atomic(files.config, json.dumps(to_dict(config), indent=1))
            for path in remove_partial_saves(run_dir):
                print(f"Removed {path.name}: a checkpoint save that never finished.", file=out)
        replay = make_replay(config, spaces, ranks.shard(run_dir))
        ranks.reseed(replay, config.seed)
        if ckpt is not None:
            resumed = resumelib.restore(ckpt, agent, replay, pool, out, ranks.rank)
        else:
            resumed = resumelib.Resumed.fresh(run.envs)
        resumed.state.ranks = ranks.size
        if ranks.writer:
            record_session(run_dir, resumed.state.env_steps, config.compute.device)
        _describe(config, agent, pool, replay, out)
        ranks.describe(config, out)
        logger = make_logger(run_dir) if ranks.writer else _Silent()
        parts = LoopParts(pool, agent, replay, logger, make_env, ranks)
        state = Trainer(config, run_dir, parts, hooks, resumed, out, progress, interrupt).run()
        return Trained(state, agent)


def _env_factory(maker: EnvMaker, config: Config, seed: int) -> Env:
    return maker(config, seed, "train")


def _episode_seed(seed: int, first_env: int, env: int, episode: int) -> int:
    """The seed of a training env's episode, the env numbered across every rank's."""
    return episode_seed(seed, TRAIN_STREAM, first_env + env, episode)


class _Silent:
    """The logger of ranks other than 0, which write nothing outside their replay shard."""

    def write(self, step: int, metrics: Mapping[str, Any], offline_updates: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class LoopParts(NamedTuple):
    """What the loop drives, built by :func:`train` from its factories."""

    pool: EnvPool
    agent: Agent
    replay: Replay
    logger: Logger
    make_env: EnvMaker  # for evaluation's envs
    ranks: Ranks | None = None  # this process's place in a data-parallel job (None: alone)


class Trainer(Session):
    """One training session over a run dir, on parts built for it.

    Each method is one concern of the loop; :meth:`_loop` strings them together.
    """

    PART_NOTES: ClassVar[Mapping[str, str]] = {"env": " (waiting for the envs)"}

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        parts: LoopParts,
        hooks: Hooks,
        resumed: resumelib.Resumed,
        out: TextIO,
        progress: bool,
        interrupt: StopRequest,
    ):
        state = resumed.state
        bar = Progress(config.run.steps, state.env_steps, enabled=progress, out=out)
        agent, replay, logger, make_env = parts.agent, parts.replay, parts.logger, parts.make_env
        super().__init__(config, run_dir, hooks, out, state, agent, replay, logger, make_env, interrupt, bar)
        self.pool, self.ranks = parts.pool, parts.ranks or Ranks()
        self.returns, self.lengths = resumed.returns, resumed.lengths
        self.policy_state: Any = resumed.policy_state
        self.obs: dict[str, np.ndarray] | None = resumed.obs  # the next step to act on, once resumed
        self.episode_mean = Mean()
        self.log_mark = (self.state.env_steps, self.agent.updates)

    # ------------------------------------------------------------------ the loop

    def collect(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Act on one step of every env, store it, and keep episode statistics."""
        state = self.state
        _check_finite(obs, [*self.pool.obs_space, "reward"], state.env_steps)
        actions, self.policy_state = self.agent.policy(obs, self.policy_state, deterministic=False)
        _check_finite({"action": actions}, ["action"], state.env_steps)
        step = {k: obs[k] for k in (*self.pool.obs_space, *STEP_KEYS)}
        self.replay.add({**step, "action": actions})
        state.env_steps += self.config.run.envs * self.ranks.size
        state.env_episodes = self.pool.episodes.tolist()
        self.returns += obs["reward"]
        self.lengths += 1
        for i in np.flatnonzero(obs["is_last"]):
            state.episodes += 1
            state.last_return = float(self.returns[i])
            self.episode_mean.add({"episode/score": self.returns[i], "episode/length": self.lengths[i]})
        self.returns[obs["is_first"] | obs["is_last"]] = 0.0
        self.lengths[obs["is_last"]] = 0
        return actions

    def train(self) -> None:
        """Run the updates the train ratio owes by now."""
        state, batch_size = self.state, self.config.batch_size
        if state.train_start < 0 and self.ranks.all(self.replay.ready(batch_size)):
            state.train_start = state.env_steps
        for _ in range(updates_due(state, self.agent.updates, self.config, self.ranks.size)):
            self.interrupt.check()  # a resumed run may owe many: answer a stop between them
            result = self.agent.train_step(self.replay.sample(batch_size))
            self.train_mean.add(result.metrics)
            every = self.config.run.release_every
            if every and (self.agent.updates + state.skipped_updates) % every == 0:
                release_free_memory()
            self._count_skipped(result)

    def _position(self) -> str:
        return f"at env step {self.state.env_steps:,}"

    def _unlogged(self) -> bool:
        return self.log_mark != (self.state.env_steps, self.agent.updates)

    def log(self, now: float) -> None:
        steps, updates = self.log_mark
        dt = max(now - self.last_log, 1e-9)
        metrics = self.ranks.means(self.train_mean, self.episode_mean)  # every rank's, pooled
        # What acting measured (an agent that plans: mpc/*), this rank's own.
        metrics.update(policy_metrics(self.agent))
        metrics["fps/env"] = (self.state.env_steps - steps) / dt
        metrics["fps/train"] = (self.agent.updates - updates) / dt
        metrics["replay/steps"] = float(len(self.replay))
        metrics["env/restarts"] = float(self.pool.restarts)
        metrics["train/skipped_updates"] = float(self.state.skipped_updates)
        metrics["replay/bad_chunks"] = float(len(getattr(self.replay, "bad_chunks", [])))
        self._write_log(now, dt, metrics)
        self.log_mark = (self.state.env_steps, self.agent.updates)

    def evaluate(self) -> None:
        """The deterministic policy on the next fresh evaluation seeds."""
        run, state = self.config.run, self.state
        if not run.eval_eps:
            return
        if not self.ranks.writer:  # rank 0 evaluates for the job
            state.eval_episodes += run.eval_eps
            state.last_eval = state.env_steps
            return
        seeds = eval_seeds(self.config.seed, state.eval_episodes, run.eval_eps)
        # Evaluation and its diagnostics allocate other shapes than a train step: start them,
        # and the next train step, on released memory, so neither lands on the other's leftovers.
        if run.release_every:
            release_free_memory()
        # What collection measured while acting, logged before evaluation's own acting mixes in.
        collected = policy_metrics(self.agent)
        if collected:
            self.logger.write(state.env_steps, collected)
        result = self._evaluate_episodes(seeds)
        state.eval_episodes += run.eval_eps
        state.last_eval = state.env_steps
        state.last_eval_return = result.mean
        self.logger.write(
            state.env_steps,
            {
                **eval_metrics(result),
                "time/elapsed": self.elapsed(),
                **{f"eval/{k}": v for k, v in policy_metrics(self.agent).items()},
            },
        )
        self.bar.note(eval_line(result, f"at {state.env_steps:,}", run.eval_max_steps))
        self._after_eval(result, {})
        del result  # its recorded episodes, so that the release below frees them too
        if run.release_every:
            release_free_memory()

    def save(self) -> None:
        """Checkpoint everything a resume needs; weights that are not finite never are."""
        check_weights_finite(self.agent, self.run_dir, self._position())
        self.state.elapsed = self.elapsed()
        self.replay.flush(force=True)
        self.state.replay = self.replay.state()
        extra = {}
        if self.policy_state is not None:
            extra = self.agent.policy_state_tensors(self.policy_state)
        keep = self.config.run.keep_checkpoints
        replicas = self.ranks.replicas(asdict(self.state), extra, self.agent)
        if self.ranks.writer:
            save_checkpoint(
                self.run_dir, self.state.env_steps, self.agent, asdict(self.state), keep, extra, replicas
            )
        self.last_save = time.time()

    def _step_envs(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        self.pool.step_async(actions)
        return self._wait_envs()

    def _wait_envs(self) -> dict[str, np.ndarray]:
        obs = self.pool.step_wait()
        for line in self.pool.last_errors:  # env restarts, said once each
            self.bar.note(line)
        self.pool.last_errors.clear()
        return obs

    def _loop(self) -> None:
        """Collect, train, log, evaluate and save until ``run.steps`` (or ``hooks.stop``)."""
        run, state, stop = self.config.run, self.state, self.hooks.stop
        actions = np.zeros((run.envs, *self.pool.act_space.shape), self.pool.act_space.dtype)
        with self.timed("env"):
            obs = self.obs if self.obs is not None else self._step_envs(actions)
        while state.env_steps < run.steps:
            self.interrupt.check()
            with self.timed("act"):
                actions = self.collect(obs)
            # Worker processes step the envs while the agent trains: the loop takes
            # about max(env, train) per step rather than their sum.
            with self.timed("env"):
                self.pool.step_async(actions)  # inline envs step here
            with self.timed("train"):
                self.train()
            self.bar.update(state.env_steps, state.last_return, state.last_eval_return)
            now = time.time()
            due = self.ranks.agree(
                log=now - self.last_log >= run.log_every,
                save=now - self.last_save >= run.save_every,
                stop=self.interrupt.signal is not None,
            )
            if due["stop"]:  # with several ranks, on a signal to any of them: all stop here
                raise KeyboardInterrupt(f"signal {self.interrupt.signal or 'to another rank'}")
            if due["log"]:
                self.log(now)
            if run.eval_every and state.env_steps - state.last_eval >= run.eval_every:
                with self.timed("eval"):
                    self.evaluate()
                if self.ranks.from_writer(self.ranks.writer and stop is not None and stop(state)):
                    self.bar.note(f"stopping at {state.env_steps:,} env steps: the stop condition holds")
                    self._wait_envs()  # collect the step in flight before leaving
                    break
            if due["save"]:
                with self.timed("save"):
                    self.save()
            with self.timed("env"):
                obs = self._wait_envs()
        if state.last_eval != state.env_steps or not run.eval_every:
            with self.timed("eval"):
                self.evaluate()

    def _done_line(self) -> str:
        state = self.state
        line = (
            f"Done: {state.env_steps:,} env steps, {self.agent.updates:,} updates in "
            f"{state.elapsed / 60:.1f} min. Last eval return {state.last_eval_return:.1f}."
        )
        if state.offline_updates:  # a fine-tuned run: its totals hold the offline part too
            online = self.agent.updates - state.offline_updates
            if state.offline_elapsed:
                minutes = (state.elapsed - state.offline_elapsed) / 60
                line += (
                    f" Of these, {state.offline_updates:,} updates and {state.offline_elapsed / 60:.1f} "
                    f"min were offline; online {online:,} updates in {minutes:.1f} min."
                )
            else:  # a checkpoint from before the offline part's time was kept
                line += f" Of these, {state.offline_updates:,} updates were offline; online {online:,}."
        return line


def _check_finite(step: dict[str, np.ndarray], keys: list[str], env_step: int) -> None:
    """RunError naming the key, env and env step of the first non-finite value."""
    for key in keys:
        value = np.asarray(step[key])
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = ~np.isfinite(value.reshape(len(value), -1)).all(1)
            env = int(np.flatnonzero(bad)[0])
            raise RunError(
                f"{key} from env {env} is not finite at env step {env_step:,} "
                f"({value[env].reshape(-1)[:8].tolist()}...): a broken env or a diverged policy"
            )


def _describe(config: Config, agent: Agent, pool: EnvPool, replay: Replay, out: TextIO) -> None:
    keys = ", ".join(f"{k} {s.dtype}{list(s.shape)}" for k, s in pool.obs_space.items())
    act = pool.act_space
    act_desc = f"discrete({act.classes})" if act.discrete else f"continuous{list(act.shape)}"
    per_update = config.batch_size * config.batch_length
    print(
        f"Env {config.task}: observations {keys}; actions {act_desc}; {config.run.envs} envs "
        f"({config.run.env_workers}).",
        file=out,
    )
    print(
        f"Agent: {agent.param_count():,} parameters on {agent.device}; presets "
        f"{', '.join(config.presets) or 'none'}; malloc {malloc_in_use()}.",
        file=out,
    )
    print(
        f"Training: {config.run.steps:,} env steps, one update of {config.batch_size}x"
        f"{config.batch_length} every {per_update / config.run.train_ratio:g} env steps "
        f"(train_ratio {config.run.train_ratio:g}); replay holds {replay.slots * replay.streams:,} steps.",
        file=out,
    )
