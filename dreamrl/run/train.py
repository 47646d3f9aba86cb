"""The training loop: collect, add to replay, train at ``train_ratio``, log, evaluate, save.

``train`` takes factories (an env maker), so tests can hand it a dummy env. Rerunning
it on the same run dir resumes from the newest good checkpoint (see
:mod:`dreamrl.run.resume`): weights, optimiser, return normaliser, slow critic, random
generators, counters, the replay (reconciled with the checkpoint) and the envs
themselves, replayed to where they were, so that on a CPU the resumed run continues
exactly as an uninterrupted one would.

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
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from dreamrl.agents.dreamer import Agent, PolicyState
from dreamrl.config import Config, to_dict
from dreamrl.envs import TRAIN_STREAM, episode_seed, make_env
from dreamrl.envs.base import Env
from dreamrl.envs.pool import EnvPool, ReplayMismatchError, stack
from dreamrl.nets.rssm import Latent
from dreamrl.replay import Replay, check_capacity
from dreamrl.run import resume as resumelib
from dreamrl.run.allocator import malloc_in_use, release_free_memory
from dreamrl.run.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_loop_state,
    load_loop_tensors,
    remove_partial_saves,
    save_checkpoint,
)
from dreamrl.run.errors import RunError
from dreamrl.run.evaluate import eval_seeds, evaluate
from dreamrl.run.interrupt import StopRequest, stop_on_signals
from dreamrl.run.logging import LOOP_PARTS, Mean, MetricsLogger
from dreamrl.run.progress import Progress
from dreamrl.spaces import STEP_KEYS, replay_spaces

CONFIG_FILE = resumelib.CONFIG_FILE
# (config, seed, mode) -> env, as make_env: mode is 'train' for the envs that collect and
# 'eval' for evaluation's (DMC's env.dmc.eval_distractor applies to those).
EnvMaker = Callable[[Config, "int | None", str], Env]


@dataclass
class LoopState:
    """Counters of the loop, saved with every checkpoint."""

    env_steps: int = 0
    train_start: int = -1  # env step at which the replay first filled a batch
    updates: int = 0
    episodes: int = 0
    eval_episodes: int = 0  # evaluation episodes run so far: the next seeds' offset
    last_eval: int = 0
    elapsed: float = 0.0
    last_return: float = float("nan")
    last_eval_return: float = float("nan")
    env_episodes: list[int] = field(default_factory=list)  # episodes started per env
    replay: dict[str, Any] = field(default_factory=dict)


def updates_due(state: LoopState, config: Config) -> int:
    """Train steps owed so that replayed steps / env steps tracks ``train_ratio``."""
    if state.train_start < 0:
        return 0
    per_step = config.run.train_ratio / (config.batch_size * config.batch_length)
    owed = 1 + math.floor((state.env_steps - state.train_start) * per_step)
    return max(0, owed - state.updates)


def replay_capacity(config: Config) -> int:
    """Steps the replay must hold: its size, or the whole run if that is shorter."""
    slack = config.run.envs * config.batch_length  # the per-stream rings round up
    return int(min(config.replay.size, config.run.steps + slack))


def _env_factory(maker: EnvMaker, config: Config, seed: int) -> Env:
    return maker(config, seed, "train")


def train(
    config: Config,
    run_dir: str | Path,
    maker: EnvMaker = make_env,
    out: TextIO = sys.stdout,
    progress: bool = True,
    stop: Callable[[LoopState], bool] | None = None,
) -> LoopState:
    """Train (or resume training) ``config`` in ``run_dir`` until ``run.steps``, or until
    ``stop(state)`` says so after an evaluation (a benchmark's early exit)."""
    run_dir = Path(run_dir)
    resumelib.check_config(run_dir, config)  # before anything is written
    run = config.run
    factories = [
        functools.partial(_env_factory, maker, config, episode_seed(config.seed, TRAIN_STREAM, i, 0))
        for i in range(run.envs)
    ]
    pool = EnvPool(
        factories,
        run.env_workers,
        timeout=run.env_timeout,
        restarts=run.env_restarts,
        window=run.env_restart_window,
        episode_seed=functools.partial(episode_seed, config.seed, TRAIN_STREAM),
    )
    try:
        with stop_on_signals() as interrupt:
            return Trainer(config, run_dir, pool, maker, out, progress, interrupt).run(stop)
    finally:
        pool.close()


def time_split(seconds: dict[str, float], wall: float) -> dict[str, float]:
    """Fraction of ``wall`` seconds spent in each part of the loop (0 for a part never
    timed); the rest (logging, progress) is what the fractions leave out of 1."""
    wall = max(wall, 1e-9)
    return {part: seconds.get(part, 0.0) / wall for part in LOOP_PARTS}


def resident_mb() -> tuple[float, float]:
    """(now, peak) resident memory of this process in MB: the peak from getrusage, the
    current figure from /proc (NaN where there is none)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            now_mb = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return math.nan, peak_mb
    return now_mb, max(now_mb, peak_mb)  # read a moment apart: the process may have grown


class Trainer:
    """One training session over a run dir: owns the agent, replay, logger and clocks.

    Each method is one concern of the loop; :meth:`run` strings them together.
    """

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        pool: EnvPool,
        maker: EnvMaker,
        out: TextIO,
        progress: bool,
        interrupt: StopRequest,
    ):
        self.config, self.run_dir, self.pool, self.maker, self.out = config, run_dir, pool, maker, out
        self.interrupt = interrupt  # checked between steps: a stop signal becomes KeyboardInterrupt there
        run = config.run
        self.agent = Agent(
            config,
            pool.obs_space,
            pool.act_space,
            obs_converter=pool.obs_converter,
            act_converter=pool.act_converter,
        )
        spaces = replay_spaces(pool.obs_space, pool.act_space)
        self.ckpt = self._find_checkpoint()
        if self.ckpt is not None:
            resumelib.check_spaces(self.ckpt, pool.obs_space, pool.act_space)
        check_capacity(spaces, replay_capacity(config), run_dir / "replay")
        # Every check has passed: only now does anything get written.
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(json.dumps(to_dict(config), indent=1))
        for path in remove_partial_saves(run_dir):
            print(f"Removed {path.name}: a checkpoint save that never finished.", file=out)
        self.replay = Replay(
            spaces,
            replay_capacity(config),
            run.envs,
            config.batch_length,
            config.replay.online,
            config.replay.chunksize,
            run_dir / "replay",
            config.seed,
        )
        self.state = LoopState(env_episodes=[0] * run.envs)
        self.returns = np.zeros(run.envs)
        self.lengths = np.zeros(run.envs, np.int64)
        self.policy_state: PolicyState | None = None
        self.obs: dict[str, np.ndarray] | None = None  # the next step to act on, once resumed
        self.skipped_in_row = 0
        if self.ckpt is not None:
            self._resume(self.ckpt)
        _describe(config, self.agent, pool, self.replay, out)
        self.logger = MetricsLogger(run_dir)
        self.train_mean, self.episode_mean = Mean(), Mean()
        self.bar = Progress(run.steps, self.state.env_steps, enabled=progress, out=out)
        self.session_start = time.time()
        self.elapsed_before = self.state.elapsed
        self.last_log = self.last_save = time.time()
        self.log_mark = (self.state.env_steps, self.state.updates)
        # Seconds per loop part since the last log, and over this session.
        self.busy: dict[str, float] = dict.fromkeys(LOOP_PARTS, 0.0)
        self.busy_session: dict[str, float] = dict.fromkeys(LOOP_PARTS, 0.0)

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Count the wall time inside towards ``part`` of the loop."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.busy[part] += seconds
            self.busy_session[part] += seconds

    # ------------------------------------------------------------------ resuming

    def _find_checkpoint(self) -> Path | None:
        skipped: list[str] = []
        ckpt = latest_checkpoint(self.run_dir, skipped)
        for reason in skipped:
            print(f"warning: skipping a damaged checkpoint: {reason}", file=self.out)
        if ckpt is None and skipped:
            raise RunError(
                f"{self.run_dir}: every checkpoint is damaged ({len(skipped)}); "
                "move the run dir away to start over"
            )
        if ckpt is not None and skipped:
            print(f"Falling back to {ckpt.name}, the newest checkpoint that verifies.", file=self.out)
        return ckpt

    def _resume(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        self.agent.load_state_tensors(load_file(str(ckpt / "agent.safetensors")))
        meta = json.loads((ckpt / "agent.json").read_text())
        self.agent.updates = int(meta["updates"])
        self.agent.skipped_updates = int(meta.get("skipped_updates", 0))
        self.state = LoopState(**load_loop_state(ckpt))
        if not self.state.env_episodes:
            self.state.env_episodes = [0] * self.config.run.envs
        loaded = self.replay.load(until=self.state.replay.get("count"))
        self.replay.restore(self.state.replay)
        print(
            f"Resuming from {ckpt.name}: {self.state.env_steps:,} env steps, "
            f"{self.state.updates:,} updates, {loaded:,} replay steps loaded.",
            file=self.out,
        )
        if self.replay.dropped_chunks:
            print(
                f"Discarded {self.replay.dropped_chunks} replay chunk(s) written after that checkpoint.",
                file=self.out,
            )
        for problem in self.replay.bad_chunks:
            print(f"warning: skipped a damaged replay chunk: {problem}", file=self.out)
        self._restore_envs(load_loop_tensors(ckpt))

    def _restore_envs(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replay each env's current episode to where the checkpoint left it."""
        keys = list(self.pool.obs_space)
        plans = [
            resumelib.plan_stream(self.replay, i, self.state.env_episodes[i], keys)
            for i in range(self.config.run.envs)
        ]
        if all(p is not None for p in plans) and "policy.deter" in tensors:
            try:
                steps = [
                    self.pool.fast_forward(i, p.episode, list(p.actions), p.expected)  # type: ignore[union-attr]
                    for i, p in enumerate(plans)
                ]
            except ReplayMismatchError as e:
                print(
                    f"The envs did not replay their episodes exactly ({e}); they start fresh episodes, "
                    "so this run will not match an uninterrupted one step for step.",
                    file=self.out,
                )
            else:
                self.obs = stack(steps)
                dev = self.agent.device
                latent = Latent(tensors["policy.deter"].to(dev), tensors["policy.stoch"].to(dev))
                self.policy_state = PolicyState(latent, tensors["policy.action"].to(dev))
                self.returns[:] = [p.reward for p in plans]  # type: ignore[union-attr]
                self.lengths[:] = [p.length for p in plans]  # type: ignore[union-attr]
                return
        for i, episodes in enumerate(self.state.env_episodes):
            self.pool.start_fresh(i, episodes)

    # ------------------------------------------------------------------ the loop

    def elapsed(self) -> float:
        """Wall seconds of training over every session of this run."""
        return self.elapsed_before + time.time() - self.session_start

    def collect(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Act on one step of every env, store it, and keep episode statistics."""
        state = self.state
        _check_finite(obs, [*self.pool.obs_space, "reward"], state.env_steps)
        actions, self.policy_state = self.agent.policy(obs, self.policy_state, deterministic=False)
        _check_finite({"action": actions}, ["action"], state.env_steps)
        step = {k: obs[k] for k in (*self.pool.obs_space, *STEP_KEYS)}
        self.replay.add({**step, "action": actions})
        state.env_steps += self.config.run.envs
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
        if state.train_start < 0 and self.replay.ready(batch_size):
            state.train_start = state.env_steps
        for _ in range(updates_due(state, self.config)):
            self.interrupt.check()  # a resumed run may owe many: answer a stop between them
            metrics = self.agent.train_step(self.replay.sample(batch_size))
            self.train_mean.add(metrics)
            state.updates += 1
            every = self.config.run.release_every
            if every and state.updates % every == 0:
                release_free_memory()
            self.skipped_in_row = self.skipped_in_row + 1 if metrics["train/skipped"] else 0
            if self.skipped_in_row >= self.config.run.skip_limit:
                raise RunError(
                    f"{self.skipped_in_row} updates in a row had a non-finite "
                    f"{', '.join(self.agent.nonfinite)} (loss term, or the gradient) at env step "
                    f"{state.env_steps:,}; stopping (run.skip_limit={self.config.run.skip_limit})"
                )

    def log(self, now: float) -> None:
        steps, updates = self.log_mark
        dt = max(now - self.last_log, 1e-9)
        metrics = {**self.train_mean.result(), **self.episode_mean.result()}
        metrics["fps/env"] = (self.state.env_steps - steps) / dt
        metrics["fps/train"] = (self.state.updates - updates) / dt
        metrics["replay/steps"] = float(len(self.replay))
        metrics["env/restarts"] = float(self.pool.restarts)
        metrics["replay/bad_chunks"] = float(len(getattr(self.replay, "bad_chunks", [])))
        metrics["time/elapsed"] = self.elapsed()
        for part, frac in time_split(self.busy, dt).items():
            metrics[f"time/{part}_frac"] = frac
        self.busy = dict.fromkeys(LOOP_PARTS, 0.0)
        metrics["mem/rss_mb"], metrics["mem/peak_rss_mb"] = resident_mb()
        self.logger.write(self.state.env_steps, metrics)
        self.last_log, self.log_mark = now, (self.state.env_steps, self.state.updates)

    def evaluate(self) -> None:
        """The deterministic policy on the next fresh evaluation seeds."""
        run, state = self.config.run, self.state
        if not run.eval_eps:
            return
        seeds = eval_seeds(self.config.seed, state.eval_episodes, run.eval_eps)
        # Evaluation and its diagnostics allocate other shapes than a train step: start them,
        # and the next train step, on released memory, so neither lands on the other's leftovers.
        if run.release_every:
            release_free_memory()
        maker = functools.partial(self.maker, self.config, None, "eval")
        result = evaluate(
            self.agent,
            maker,
            seeds,
            run.eval_envs,
            record=run.diagnose,
            workers=run.env_workers,
            timeout=run.env_timeout,
            check=self.interrupt.check,
        )
        state.eval_episodes += run.eval_eps
        state.last_eval = state.env_steps
        state.last_eval_return = result.mean
        self.logger.write(
            state.env_steps,
            {
                "eval/return": result.mean,
                "eval/return_std": result.std,
                "eval/length": float(np.mean(result.lengths)),
                "eval/returns": result.returns,
                "eval/episodes": len(result.returns),
                "time/elapsed": self.elapsed(),
            },
        )
        self.bar.note(
            f"eval at {state.env_steps:,}: return {result.mean:.1f} ± {result.std:.1f} "
            f"over {len(result.returns)} episodes"
        )
        if run.diagnose:
            self.diagnose(result.episodes)
        del result  # its recorded episodes, so that the release below frees them too
        if run.release_every:
            release_free_memory()

    def diagnose(self, episodes: list[dict[str, np.ndarray]]) -> None:
        """World-model diagnostics on the evaluation's episodes, logged and written."""
        from dreamrl.diagnostics import run_diagnostics

        d = run_diagnostics(self.agent, episodes, self.run_dir / "diagnostics", self.state.env_steps)
        if d is None:
            return  # every episode was shorter than one window
        metrics = {
            "diag/kl_1": d["kl"][0],
            "diag/kl_H": d["kl"][-1],
            "diag/reward_error_1": d["reward_error"][0],
            "diag/reward_error_H": d["reward_error"][-1],
            "diag/continue_error_H": d["continue_error"][-1],
            "diag/drift_H": d["drift"][-1],
            "diag/latent_perplexity": d["latent_perplexity"],
        }
        metrics.update({f"diag/recon_{k}": v for k, v in d["recon_error"].items()})
        self.logger.write(self.state.env_steps, metrics)

    def save(self) -> None:
        """Checkpoint everything a resume needs; weights that are not finite never are."""
        if not self.agent.weights_finite():
            kept = list_checkpoints(self.run_dir)
            raise RunError(
                f"the weights are no longer finite at env step {self.state.env_steps:,}: not saving them. "
                f"The last checkpoint, {kept[-1][1].name if kept else '(none)'}, is from before."
            )
        self.state.elapsed = self.elapsed()
        self.replay.flush(force=True)
        self.state.replay = self.replay.state()
        extra = {}
        if self.policy_state is not None:
            latent, action = self.policy_state
            extra = {"policy.deter": latent.deter, "policy.stoch": latent.stoch, "policy.action": action}
        keep = self.config.run.keep_checkpoints
        save_checkpoint(self.run_dir, self.state.env_steps, self.agent, asdict(self.state), keep, extra)
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

    def run(self, stop: Callable[[LoopState], bool] | None = None) -> LoopState:
        """Collect, train, log, evaluate and save until ``run.steps`` (or ``stop``)."""
        run, state = self.config.run, self.state
        actions = np.zeros((run.envs, *self.pool.act_space.shape), self.pool.act_space.dtype)
        try:
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
                if now - self.last_log >= run.log_every:
                    self.log(now)
                if run.eval_every and state.env_steps - state.last_eval >= run.eval_every:
                    with self.timed("eval"):
                        self.evaluate()
                    if stop is not None and stop(state):
                        self.bar.note(f"stopping at {state.env_steps:,} env steps: the stop condition holds")
                        self._wait_envs()  # collect the step in flight before leaving
                        break
                if now - self.last_save >= run.save_every:
                    with self.timed("save"):
                        self.save()
                with self.timed("env"):
                    obs = self._wait_envs()
            if state.last_eval != state.env_steps or not run.eval_every:
                with self.timed("eval"):
                    self.evaluate()
            self.log(time.time())
            self.save()
        except KeyboardInterrupt:
            self.bar.note("interrupted: saving a checkpoint before exiting")
            self.save()
            raise
        finally:
            self.bar.close()
            self.logger.close()
        self._summary()
        return state

    def _summary(self) -> None:
        state, out = self.state, self.out
        print(
            f"Done: {state.env_steps:,} env steps, {state.updates:,} updates in "
            f"{state.elapsed / 60:.1f} min. Last eval return {state.last_eval_return:.1f}.",
            file=out,
        )
        split = time_split(self.busy_session, time.time() - self.session_start)
        notes = {"env": " (waiting for the envs)"}
        parts = ", ".join(f"{part} {100 * frac:.0f}%{notes.get(part, '')}" for part, frac in split.items())
        print(f"Wall time of this session: {parts}.", file=out)
        print(f"Logs: {self.run_dir / 'metrics.jsonl'} (TensorBoard: {self.run_dir / 'tb'})", file=out)
        print(f"Checkpoint: {latest_checkpoint(self.run_dir)}", file=out)


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
