"""The training loop with a dummy env handed in as a factory: train ratio accounting,
the stop hook, episode bookkeeping, and what a run dir holds afterwards."""

from __future__ import annotations

import io
import math
import os
import signal
import time

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from dreamrl.config import Config, build_config
from dreamrl.envs.gym_adapter import GymEnv
from dreamrl.run import train as trainlib
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.evaluate import evaluate
from dreamrl.run.logging import LOOP_PARTS, loop_seconds, read_metrics
from dreamrl.run.state import LoopState
from dreamrl.run.train import Hooks, train, updates_due


class CountingEnv(gymnasium.Env):
    """Observation is the step count; reward 1 per step; episodes of exactly 10 steps."""

    def __init__(self):
        self.observation_space = spaces.Box(0, 100, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0, 1], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, 1], np.float32), 1.0, self.t >= 10, False, {}


def make_counting(config: Config, seed: int | None, mode: str = "train") -> GymEnv:
    return GymEnv(CountingEnv(), config.env.size, seed=seed)


def config(**overrides) -> Config:
    base = {"task": "counting", "run.log_every": 0, "run.eval_eps": 2, "compute.device": "cpu"}
    return build_config(["debug"], {**base, **overrides})


def test_updates_due_follows_the_train_ratio():
    cfg = config(**{"run.train_ratio": 64})  # batch 8 x 16 = 128 steps: one update per 2 env steps
    state = LoopState(env_steps=500)
    assert updates_due(state, 0, cfg) == 0  # training has not started
    state.train_start = 500
    assert updates_due(state, 0, cfg) == 1  # the first call trains once
    state.env_steps = 520
    assert updates_due(state, 1, cfg) == 10
    state.skipped_updates = 4  # skipped updates were attempted: they are not owed again
    assert updates_due(state, 1, cfg) == 6


def test_train_loop_keeps_the_ratio_and_counts_episodes(tmp_path):
    cfg = config(**{"run.steps": 200, "run.envs": 2, "run.eval_every": 0, "run.train_ratio": 64})
    result = train(cfg, tmp_path, make_env=make_counting, out=io.StringIO(), progress=False)
    state = result.state
    assert state.env_steps == 200
    # Each env stores 11 steps per episode (the reset observation, then 10 steps).
    assert state.episodes == 2 * (100 // 11)
    per_step = 64 / (8 * 16)
    assert result.updates == 1 + math.floor((200 - state.train_start) * per_step)
    records = read_metrics(tmp_path)
    scores = [r["episode/score"] for r in records if "episode/score" in r]
    assert scores and all(s == 10.0 for s in scores)  # reward 1 on each of 10 steps, none on reset
    assert records[-1]["step"] == 200
    memory = [r for r in records if "mem/peak_rss_mb" in r]
    assert memory, "no memory figures in the metrics"
    assert all(50 < r["mem/rss_mb"] <= r["mem/peak_rss_mb"] for r in memory)  # torch alone is ~200 MB


@pytest.mark.parametrize("every", [1, 3, 0])
def test_freed_memory_is_released_every_so_many_updates(tmp_path, monkeypatch, every):
    calls = []
    monkeypatch.setattr(trainlib, "release_free_memory", lambda: calls.append(1) or True)
    overrides = {"run.steps": 160, "run.envs": 1, "run.eval_every": 0, "run.eval_eps": 0}
    cfg = config(**overrides, **{"run.release_every": every})
    updates = train(cfg, tmp_path, make_env=make_counting, out=io.StringIO(), progress=False).updates
    assert updates > 3, updates
    assert len(calls) == (updates // every if every else 0)
    if every:  # the final evaluation, with its diagnostics, runs between two releases of its own
        calls.clear()
        cfg = config(**{**overrides, "run.eval_eps": 2, "run.release_every": every})
        result = train(cfg, tmp_path / "with_eval", make_env=make_counting, out=io.StringIO(), progress=False)
        assert len(calls) == result.updates // every + 2


def test_evaluation_builds_its_envs_in_eval_mode(tmp_path):
    """Evaluation envs are built as evaluation's (DMC's eval_distractor applies to them),
    the collecting envs as training's."""
    modes: list[str] = []

    def maker(config: Config, seed: int | None, mode: str = "train") -> GymEnv:
        modes.append(mode)
        return make_counting(config, seed)

    cfg = config(**{"run.steps": 100, "run.envs": 1, "run.eval_every": 50, "run.eval_envs": 2})
    train(cfg, tmp_path, make_env=maker, out=io.StringIO(), progress=False)
    assert modes[0] == "train" and set(modes[1:]) == {"eval"}, modes
    assert len(modes) > 1


def test_stop_hook_ends_training_after_an_evaluation(tmp_path):
    cfg = config(**{"run.steps": 1000, "run.envs": 1, "run.eval_every": 100})
    seen: list[int] = []

    def stop(state: LoopState) -> bool:
        seen.append(state.env_steps)
        return state.env_steps >= 200

    hooks = Hooks(stop=stop)
    state = train(cfg, tmp_path, make_env=make_counting, out=io.StringIO(), progress=False, hooks=hooks).state
    assert seen == [100, 200]
    assert state.env_steps == 200
    evals = [r for r in read_metrics(tmp_path) if "eval/return" in r]
    assert [r["step"] for r in evals] == [100, 200]
    assert all(r["eval/return"] == 10.0 for r in evals)  # every episode pays 10, whatever the policy


class SleepyEnv(CountingEnv):
    """CountingEnv whose every step takes at least 20 ms of wall time."""

    def step(self, action):
        time.sleep(0.02)
        return super().step(action)


def test_loop_time_is_split_into_its_parts(tmp_path):
    """Each log record says what fraction of its window went to training, waiting for the
    envs, acting, evaluating and saving; an inline env's stepping is counted as env time."""
    cfg = config(**{"run.steps": 60, "run.envs": 1, "run.eval_every": 30, "run.env_workers": "inline"})
    out = io.StringIO()
    maker = lambda config, seed, mode="train": GymEnv(SleepyEnv(), config.env.size, seed=seed)  # noqa: E731
    train(cfg, tmp_path, make_env=maker, out=out, progress=False)
    records = [r for r in read_metrics(tmp_path) if "time/env_frac" in r]
    assert len(records) > 10  # run.log_every=0: a record per loop step
    keys = [f"time/{part}_frac" for part in LOOP_PARTS]
    for r in records:
        assert all(0.0 <= r[k] <= 1.0 for k in keys), r
        assert sum(r[k] for k in keys) <= 1.0 + 1e-3, r
    assert any(r["time/eval_frac"] > 0 for r in records) and any(r["time/train_frac"] > 0 for r in records)
    # The env's sleeps alone are 20 ms a step (windows measured by the elapsed clock).
    seconds = loop_seconds(records)
    assert seconds["env"] >= 0.9 * 0.02 * seconds["steps"] > 0, seconds
    summary = next(line for line in out.getvalue().splitlines() if line.startswith("Wall time"))
    assert all(f"{part} " in summary for part in LOOP_PARTS), summary


def test_time_split_is_a_fraction_per_part():
    split = trainlib.time_split({"train": 3.0, "env": 1.0}, 8.0)
    assert split == {"train": 0.375, "env": 0.125, "act": 0.0, "eval": 0.0, "save": 0.0}


def test_progress_lines_without_a_terminal(tmp_path):
    from dreamrl.run.progress import Progress

    out = io.StringIO()
    bar = Progress(1000, 0, enabled=True, out=out, line_every=0.0)
    bar.update(500, 12.5, float("nan"))
    bar.note("eval at 500: return 10.0")
    text = out.getvalue()
    assert "500/1,000 env steps" in text and "return 12.5" in text and "eval -" in text
    assert "eval at 500" in text


class EndingEnv(gymnasium.Env):
    """Episodes end after 6 steps: a terminal state on odd episodes, a time limit on even."""

    def __init__(self):
        self.observation_space = spaces.Box(0, 100, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0
        self.episode = -1

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return np.array([0, self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        odd = self.episode % 2 == 1
        done = self.t >= 6
        return np.array([self.t, self.episode], np.float32), 1.0, done and odd, done and not odd, {}


def make_ending(config: Config, seed: int | None, mode: str = "train") -> GymEnv:
    return GymEnv(EndingEnv(), config.env.size, seed=seed)


def test_truncation_and_termination_reach_replay_apart(tmp_path):
    """A time-limit end is stored as is_last only; a terminal end as is_last and is_terminal."""
    cfg = config(**{"run.steps": 140, "run.envs": 1, "run.eval_every": 0, "run.eval_eps": 0})
    train(cfg, tmp_path, make_env=make_ending, out=io.StringIO(), progress=False)
    chunks = sorted((tmp_path / "replay").glob("*.npz"))
    data = {k: np.concatenate([np.load(c)[k] for c in chunks]) for k in ("vector", "is_last", "is_terminal")}
    ends = np.flatnonzero(data["is_last"])
    assert len(ends) >= 10
    for i in ends:
        odd_episode = int(data["vector"][i, 1]) % 2 == 1
        assert data["is_terminal"][i] == odd_episode, (i, data["vector"][i])
    assert not data["is_terminal"][~data["is_last"]].any()


class SignallingEnv(CountingEnv):
    """Sends this process SIGTERM from inside its 50th step: the step must still finish."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.finished_after_signal = False

    def step(self, action):
        self.total += 1
        if self.total == 50:
            os.kill(os.getpid(), signal.SIGTERM)
            self.finished_after_signal = True  # reached: the handler raised nothing here
        return super().step(action)


def test_a_stop_signal_ends_the_run_between_steps_with_a_save(tmp_path):
    overrides = {"run.steps": 400, "run.envs": 1, "run.eval_every": 0, "run.env_workers": "inline"}
    cfg = config(**overrides, **{"run.save_every": 3600})  # no periodic saves: only the signal's
    env = SignallingEnv()
    out = io.StringIO()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        train(
            cfg,
            tmp_path,
            make_env=lambda config, seed, mode="train": GymEnv(env, config.env.size, seed=seed),
            out=out,
            progress=False,
        )
    assert env.finished_after_signal
    assert signal.getsignal(signal.SIGTERM) is before
    # Saved at the first check after the signal: 50 env steps and 5 resets are 55 observations,
    # of which the last (from the step that sent the signal) was still in flight.
    assert [step for step, _ in list_checkpoints(tmp_path)] == [54]
    assert "interrupted: saving a checkpoint" in out.getvalue()


def test_evaluation_stops_at_a_check():
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("signal SIGTERM")

    class FirstAction:
        def policy(self, obs, state, deterministic=True):
            return np.zeros((len(obs["reward"]),), np.int64), None

    with pytest.raises(KeyboardInterrupt):
        evaluate(FirstAction(), lambda: make_counting(config(), None), [1, 2], check=check)
    assert len(calls) == 5


class EndlessEnv(CountingEnv):
    """Episodes that never end (an untrained policy that never presses FIRE)."""

    def step(self, action):
        self.t += 1
        return np.array([self.t % 100, 1], np.float32), 0.0, False, False, {}


def make_endless(config: Config, seed: int | None, mode: str = "train") -> GymEnv:
    return GymEnv(EndlessEnv(), config.env.size, seed=seed)


def test_an_evaluation_of_episodes_that_never_end_is_cut_and_keeps_bounded_records():
    class FirstAction:
        def policy(self, obs, state, deterministic=True):
            return np.zeros((len(obs["reward"]),), np.int64), None

    result = evaluate(
        FirstAction(),
        lambda: make_endless(config(), None),
        [1, 2, 3],
        envs=2,
        record=True,
        max_steps=40,
        record_steps=25,
    )
    assert result.lengths == [40, 40, 40] and result.cut == [True, True, True] and result.cut_count == 3
    assert [len(e["is_first"]) for e in result.episodes] == [25, 25, 25]  # memory bounded by record_steps
    assert result.as_dict()["cut"] == [True, True, True]


def test_the_loop_evaluates_endless_episodes_within_its_budget_and_says_so(tmp_path):
    cfg = config(**{"run.steps": 60, "run.envs": 1, "run.eval_every": 30, "run.eval_max_steps": 25})
    out = io.StringIO()
    hooks = Hooks(record_steps=10)
    train(cfg, tmp_path, make_env=make_endless, out=out, progress=True, hooks=hooks)
    evals = [r for r in read_metrics(tmp_path) if "eval/return" in r]
    assert [r["step"] for r in evals] == [30, 60]
    assert all(r["eval/cut"] == 2 and r["eval/length"] == 25 for r in evals)
    assert "2 cut at 25 steps" in out.getvalue()
