"""The training loop: collect, add to replay, train at ``train_ratio``, log, evaluate, save.

``train`` takes factories (an env maker), so tests can hand it a dummy env. Rerunning
it on the same run dir resumes from the newest checkpoint: weights, optimiser, return
normaliser, slow critic, generators, counters and the replay (from its chunk files).
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dreamrl.agent import Agent
from dreamrl.config import Config, to_dict
from dreamrl.envs import TRAIN_STREAM, env_seed, make_env
from dreamrl.envs.base import Env
from dreamrl.envs.pool import EnvPool
from dreamrl.envs.spaces import STEP_KEYS, Space
from dreamrl.replay import Replay
from dreamrl.run.checkpoint import latest_checkpoint, load_loop_state, save_checkpoint
from dreamrl.run.evaluate import eval_seeds, evaluate
from dreamrl.run.logging import Mean, MetricsLogger
from dreamrl.run.progress import Progress

CONFIG_FILE = "config.json"
EnvMaker = Callable[[Config, "int | None"], Env]


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
    replay: dict[str, Any] = field(default_factory=dict)


def replay_spaces(obs_space: dict[str, Space], act_space: Space) -> dict[str, Space]:
    """Everything a replay step holds: observations, the action, reward and flags."""
    return {
        **obs_space,
        "action": act_space,
        "reward": Space("float32", ()),
        "is_first": Space("bool", ()),
        "is_last": Space("bool", ()),
        "is_terminal": Space("bool", ()),
    }


def updates_due(state: LoopState, config: Config) -> int:
    """Train steps owed so that replayed steps / env steps tracks ``train_ratio``."""
    if state.train_start < 0:
        return 0
    per_step = config.run.train_ratio / (config.batch_size * config.batch_length)
    owed = 1 + math.floor((state.env_steps - state.train_start) * per_step)
    return max(0, owed - state.updates)


def _env_factory(maker: EnvMaker, config: Config, seed: int) -> Env:
    return maker(config, seed)


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
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps(to_dict(config), indent=1))
    run = config.run
    factories = [
        functools.partial(_env_factory, maker, config, env_seed(config.seed, TRAIN_STREAM, i))
        for i in range(run.envs)
    ]
    pool = EnvPool(
        factories,
        run.env_workers,
        timeout=run.env_timeout,
        restarts=run.env_restarts,
        window=run.env_restart_window,
    )
    try:
        return Trainer(config, run_dir, pool, maker, out, progress).run(stop)
    finally:
        pool.close()


class Trainer:
    """One training session over a run dir: owns the agent, replay, logger and clocks.

    Each method is one concern of the loop; :meth:`run` strings them together.
    """

    def __init__(
        self, config: Config, run_dir: Path, pool: EnvPool, maker: EnvMaker, out: TextIO, progress: bool
    ):
        self.config, self.run_dir, self.pool, self.maker, self.out = config, run_dir, pool, maker, out
        run = config.run
        self.agent = Agent(
            config,
            pool.obs_space,
            pool.act_space,
            obs_converter=pool.obs_converter,
            act_converter=pool.act_converter,
        )
        self.replay = Replay(
            replay_spaces(pool.obs_space, pool.act_space),
            config.replay.size,
            run.envs,
            config.batch_length,
            config.replay.online,
            config.replay.chunksize,
            run_dir / "replay",
            config.seed,
        )
        self.state = LoopState()
        self._resume()
        _describe(config, self.agent, pool, self.replay, out)
        self.logger = MetricsLogger(run_dir)
        self.train_mean, self.episode_mean = Mean(), Mean()
        self.returns = np.zeros(run.envs)
        self.lengths = np.zeros(run.envs, np.int64)
        self.bar = Progress(run.steps, self.state.env_steps, enabled=progress, out=out)
        self.session_start = time.time()
        self.elapsed_before = self.state.elapsed
        self.last_log = self.last_save = time.time()
        self.log_mark = (self.state.env_steps, self.state.updates)

    def _resume(self) -> None:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            return
        from safetensors.torch import load_file

        self.agent.load_state_tensors(load_file(str(ckpt / "agent.safetensors")))
        self.agent.updates = int(json.loads((ckpt / "agent.json").read_text())["updates"])
        self.state = LoopState(**load_loop_state(ckpt))
        loaded = self.replay.load()
        self.replay.restore(self.state.replay)
        print(
            f"Resuming from {ckpt.name}: {self.state.env_steps:,} env steps, "
            f"{self.state.updates:,} updates, {loaded:,} replay steps loaded.",
            file=self.out,
        )

    def elapsed(self) -> float:
        """Wall seconds of training over every session of this run."""
        return self.elapsed_before + time.time() - self.session_start

    def collect(self, obs: dict[str, np.ndarray], policy_state: Any) -> tuple[np.ndarray, Any]:
        """Act on one step of every env, store it, and keep episode statistics."""
        state = self.state
        actions, policy_state = self.agent.policy(obs, policy_state, deterministic=False)
        step = {k: obs[k] for k in (*self.pool.obs_space, *STEP_KEYS)}
        self.replay.add({**step, "action": actions})
        state.env_steps += self.config.run.envs
        self.returns += obs["reward"]
        self.lengths += 1
        for i in np.flatnonzero(obs["is_last"]):
            state.episodes += 1
            state.last_return = float(self.returns[i])
            self.episode_mean.add({"episode/score": self.returns[i], "episode/length": self.lengths[i]})
        self.returns[obs["is_first"] | obs["is_last"]] = 0.0
        self.lengths[obs["is_last"]] = 0
        return actions, policy_state

    def train(self) -> None:
        """Run the updates the train ratio owes by now."""
        state, batch_size = self.state, self.config.batch_size
        if state.train_start < 0 and self.replay.ready(batch_size):
            state.train_start = state.env_steps
        for _ in range(updates_due(state, self.config)):
            self.train_mean.add(self.agent.train_step(self.replay.sample(batch_size)))
            state.updates += 1

    def log(self, now: float) -> None:
        steps, updates = self.log_mark
        dt = max(now - self.last_log, 1e-9)
        metrics = {**self.train_mean.result(), **self.episode_mean.result()}
        metrics["fps/env"] = (self.state.env_steps - steps) / dt
        metrics["fps/train"] = (self.state.updates - updates) / dt
        metrics["replay/steps"] = float(len(self.replay))
        metrics["env/restarts"] = float(self.pool.restarts)
        metrics["time/elapsed"] = self.elapsed()
        self.logger.write(self.state.env_steps, metrics)
        self.last_log, self.log_mark = now, (self.state.env_steps, self.state.updates)

    def evaluate(self) -> None:
        """The deterministic policy on the next fresh evaluation seeds."""
        run, state = self.config.run, self.state
        if not run.eval_eps:
            return
        seeds = eval_seeds(self.config.seed, state.eval_episodes, run.eval_eps)
        maker = functools.partial(self.maker, self.config, None)
        result = evaluate(self.agent, maker, seeds, run.eval_envs)
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

    def save(self) -> None:
        self.state.elapsed = self.elapsed()
        self.replay.flush(force=True)
        self.state.replay = self.replay.state()
        save_checkpoint(
            self.run_dir,
            self.state.env_steps,
            self.agent,
            asdict(self.state),
            self.config.run.keep_checkpoints,
        )
        self.last_save = time.time()

    def run(self, stop: Callable[[LoopState], bool] | None = None) -> LoopState:
        """Collect, train, log, evaluate and save until ``run.steps`` (or ``stop``)."""
        run, state = self.config.run, self.state
        actions = np.zeros((run.envs, *self.pool.act_space.shape), self.pool.act_space.dtype)
        policy_state = None
        try:
            obs = self.pool.step(actions)
            for line in self.pool.last_errors:  # env restarts, said once each
                self.bar.note(line)
            self.pool.last_errors.clear()
            while state.env_steps < run.steps:
                actions, policy_state = self.collect(obs, policy_state)
                self.train()
                self.bar.update(state.env_steps, state.last_return, state.last_eval_return)
                now = time.time()
                if now - self.last_log >= run.log_every:
                    self.log(now)
                if run.eval_every and state.env_steps - state.last_eval >= run.eval_every:
                    self.evaluate()
                    if stop is not None and stop(state):
                        self.bar.note(f"stopping at {state.env_steps:,} env steps: the stop condition holds")
                        break
                if now - self.last_save >= run.save_every:
                    self.save()
                obs = self.pool.step(actions)
                for line in self.pool.last_errors:
                    self.bar.note(line)
                self.pool.last_errors.clear()
            if state.last_eval != state.env_steps or not run.eval_every:
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
        print(f"Logs: {self.run_dir / 'metrics.jsonl'} (TensorBoard: {self.run_dir / 'tb'})", file=out)
        print(f"Checkpoint: {latest_checkpoint(self.run_dir)}", file=out)


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
        f"{', '.join(config.presets) or 'none'}.",
        file=out,
    )
    print(
        f"Training: {config.run.steps:,} env steps, one update of {config.batch_size}x"
        f"{config.batch_length} every {per_update / config.run.train_ratio:g} env steps "
        f"(train_ratio {config.run.train_ratio:g}); replay holds {replay.slots * replay.streams:,} steps.",
        file=out,
    )
