"""What dreamrl's loop does around training, done from inside SB3's ``learn``.

SB3 owns the baseline's loop (collect, update); :class:`RunCallback`, an SB3 callback
called after every step of the vectorised envs, adds what a dreamrl run does besides:
episode statistics, the progress bar, metrics every ``run.log_every`` seconds with the
share of wall time in each part of the loop, the FLOPs per env step of the session's
first update (``dreamrl.baselines.flops``), dreamrl's evaluation protocol every
``run.eval_every`` env steps (and the hooks after it), a checkpoint every
``run.save_every`` seconds, and the end of training at ``run.steps``, at ``hooks.stop`` or
on a stop signal. SB3's own metrics reach ``metrics.jsonl`` through :class:`MetricsWriter`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter

from dreamrl.baselines.agent import BaselineAgent
from dreamrl.baselines.env import EnvClock
from dreamrl.baselines.flops import FlopCount, UpdateFlops
from dreamrl.config import Config
from dreamrl.run.checkpoint import save_checkpoint
from dreamrl.run.errors import RunError
from dreamrl.run.evaluate import eval_line, eval_metrics, eval_seeds, evaluate_as_run_says
from dreamrl.run.interrupt import StopRequest
from dreamrl.run.logging import LOOP_PARTS, Mean
from dreamrl.run.progress import Progress
from dreamrl.run.state import LoopState
from dreamrl.run.train import EnvMaker, Hooks, Logger, resident_mb, time_split


def metric_name(key: str) -> str | None:
    """SB3's logger key as a dreamrl metric, or None for what dreamrl logs itself
    (``time/*``, ``rollout/ep_*``): ``train/<x>_loss`` is ``loss/<x>``, ``train/loss``
    ``loss/total``, ``train/n_updates`` ``train/updates``, the rest ``baseline/<x>``."""
    group, _, name = key.partition("/")
    if group == "train":
        if name == "n_updates":
            return "train/updates"
        if name == "loss":
            return "loss/total"
        if name.endswith("_loss"):
            return f"loss/{name[: -len('_loss')]}"
        return f"baseline/{name}"
    if group == "rollout" and not name.startswith("ep_"):
        return f"baseline/{name}"
    return None


class MetricsWriter(KVWriter):
    """An SB3 logger output writing SB3's training metrics into dreamrl's logger."""

    def __init__(self, logger: Logger):
        self.logger = logger

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        metrics = {}
        for key, value in key_values.items():
            name = metric_name(key)
            number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if name is not None and number:
                metrics[name] = float(value)
        if metrics:
            self.logger.write(int(step), metrics)

    def close(self) -> None:
        pass


class RunCallback(BaseCallback):
    """The dreamrl side of one training session of a baseline (see the module's doc)."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        agent: BaselineAgent,
        state: LoopState,
        logger: Logger,
        hooks: Hooks,
        clock: EnvClock,
        interrupt: StopRequest,
        bar: Progress,
        make_env: EnvMaker,
    ):
        super().__init__(verbose=0)
        self.config, self.run_dir, self.agent, self.state = config, run_dir, agent, state
        self.metrics, self.hooks, self.clock, self.interrupt, self.bar = logger, hooks, clock, interrupt, bar
        self.make_env = make_env
        envs = config.agent.baseline.envs
        self.returns, self.lengths = np.zeros(envs), np.zeros(envs, np.int64)
        self.episode_mean = Mean()
        self.session_start = time.time()
        self.elapsed_before = state.elapsed
        self.last_log = self.last_save = time.time()
        self.log_mark = (state.env_steps, agent.updates)
        self.stopped: str | None = None  # why training ended early: a signal, hooks.stop
        # Seconds of each loop part since the last log and over the session. SB3 collects
        # (act + env) then updates (train); eval and save happen inside collection.
        self.busy = dict.fromkeys(LOOP_PARTS, 0.0)
        self.busy_session = dict.fromkeys(LOOP_PARTS, 0.0)
        self.mark = time.perf_counter()
        self.env_mark = clock.seconds
        self.collecting = False
        self.rollout_mark = state.env_steps  # env steps when the current rollout began
        self.flops: UpdateFlops | None = None

    def _init_callback(self) -> None:
        self.flops = UpdateFlops(self.model, lambda: self.rollout_mark, self._flops_counted)

    def _flops_counted(self, count: FlopCount) -> None:
        self.metrics.write(int(self.model.num_timesteps), count.metrics())

    # ------------------------------------------------------------------ time split

    def _account(self) -> None:
        """Charge the time since the last mark to training, or to acting and the envs."""
        now, env = time.perf_counter(), self.clock.seconds
        spent, env_spent = now - self.mark, env - self.env_mark
        if self.collecting:
            self._add("env", env_spent)
            self._add("act", max(0.0, spent - env_spent))
        else:
            self._add("env", env_spent)  # the reset at the start of learn
            self._add("train", max(0.0, spent - env_spent))
        self.mark, self.env_mark = now, env

    def _add(self, part: str, seconds: float) -> None:
        self.busy[part] += seconds
        self.busy_session[part] += seconds

    def timed(self, part: str, work: Callable[[], None]) -> None:
        """Run ``work`` (an evaluation, a save), its wall time charged to ``part``."""
        self._account()
        start = time.perf_counter()
        try:
            work()
        finally:
            self._add(part, time.perf_counter() - start)
            self.mark, self.env_mark = time.perf_counter(), self.clock.seconds

    def _on_rollout_start(self) -> None:
        self._account()
        self.collecting = True
        self.rollout_mark = int(self.model.num_timesteps)

    def _on_rollout_end(self) -> None:
        self._account()
        self.collecting = False

    # ------------------------------------------------------------------ each step

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.session_start

    def _on_step(self) -> bool:
        state, run = self.state, self.config.run
        state.env_steps = int(self.num_timesteps)
        self._episodes(np.asarray(self.locals["rewards"]), np.asarray(self.locals["dones"]))
        self.bar.update(state.env_steps, state.last_return, state.last_eval_return)
        if self.interrupt.signal is not None:
            self.stopped = f"signal {self.interrupt.signal}"
            return False
        now = time.time()
        if now - self.last_log >= run.log_every:
            self.log(now)
        if run.eval_every and state.env_steps - state.last_eval >= run.eval_every:
            self.timed("eval", self.evaluate)
            if self.hooks.stop is not None and self.hooks.stop(state):
                self.stopped = f"stopping at {state.env_steps:,} env steps: the stop condition holds"
                return False
        if now - self.last_save >= run.save_every:
            self.timed("save", self.save)
        return state.env_steps < run.steps

    def _episodes(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        self.returns += rewards
        self.lengths += 1
        for i in np.flatnonzero(dones):
            self.state.episodes += 1
            self.state.last_return = float(self.returns[i])
            self.episode_mean.add({"episode/score": self.returns[i], "episode/length": self.lengths[i]})
        self.returns[dones] = 0.0
        self.lengths[dones] = 0
        self.state.env_episodes = [int(e.episodes) for e in self._wrappers()]

    def _wrappers(self) -> list[Any]:
        env = self.model.get_env()
        return list(getattr(env, "envs", []))

    # ------------------------------------------------------------------ what the loop does

    def log(self, now: float) -> None:
        self._account()
        steps, updates = self.log_mark
        dt = max(now - self.last_log, 1e-9)
        metrics: dict[str, float] = dict(self.episode_mean.result())
        metrics["fps/env"] = (self.state.env_steps - steps) / dt
        metrics["fps/train"] = (self.agent.updates - updates) / dt
        metrics["train/updates"] = float(self.agent.updates)
        metrics["time/elapsed"] = self.elapsed()
        for part, frac in time_split(self.busy, dt).items():
            metrics[f"time/{part}_frac"] = frac
        self.busy = dict.fromkeys(LOOP_PARTS, 0.0)
        metrics["mem/rss_mb"], metrics["mem/peak_rss_mb"] = resident_mb()
        self.metrics.write(self.state.env_steps, metrics)
        self.last_log, self.log_mark = now, (self.state.env_steps, self.agent.updates)

    def evaluate(self) -> None:
        """dreamrl's protocol, as a Dreamer run evaluates: the deterministic policy on the
        next fresh evaluation seeds, ``run.eval_eps`` episodes."""
        run, state = self.config.run, self.state
        state.last_eval = state.env_steps
        if not run.eval_eps:
            return
        seeds = eval_seeds(self.config.seed, state.eval_episodes, run.eval_eps)
        maker = functools.partial(self.make_env, self.config, None, "eval")
        result = evaluate_as_run_says(
            self.agent, maker, seeds, run, record_steps=self.hooks.record_steps, check=self.interrupt.check
        )
        state.eval_episodes += run.eval_eps
        state.last_eval_return = result.mean
        self.metrics.write(
            state.env_steps,
            {
                **eval_metrics(result),
                "time/elapsed": self.elapsed(),
            },
        )
        self.bar.note(eval_line(result, f"at {state.env_steps:,}", run.eval_max_steps))
        bar = self.bar
        for metrics in self.hooks.after_evaluation(self.agent, result, state.env_steps, bar.note, bar.out):
            self.metrics.write(state.env_steps, metrics)

    def save(self) -> None:
        """Checkpoint the model, its replay buffer and the loop's counters."""
        state = self.state
        state.env_steps = int(self.model.num_timesteps)
        if not self.agent.weights_finite():
            raise RunError(
                f"the weights are no longer finite at env step {state.env_steps:,}: not saving them"
            )
        state.elapsed = self.elapsed()
        keep = self.config.run.keep_checkpoints
        with self.flops.detached() if self.flops is not None else contextlib.nullcontext():
            save_checkpoint(self.run_dir, state.env_steps, self.agent, asdict(state), keep)
        self.last_save = time.time()

    def session_split(self) -> Mapping[str, float]:
        """Share of this session's wall time in each loop part."""
        self._account()
        return time_split(self.busy_session, time.time() - self.session_start)
