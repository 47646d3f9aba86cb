"""A stop signal is answered at a safe point: the handler only records it, the loop
raises KeyboardInterrupt between steps, saves, and a second signal raises at once."""

from __future__ import annotations

import io
import os
import signal

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from dreamrl.config import build_config
from dreamrl.envs.gym_adapter import GymEnv
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.evaluate import evaluate
from dreamrl.run.interrupt import StopRequest, stop_on_signals
from dreamrl.run.train import train


def test_a_signal_is_recorded_and_raised_only_when_checked():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as request:
        request.check()  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before kill returns to Python code
        assert request.signal == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            request.check()
        with pytest.raises(KeyboardInterrupt, match="the second"):
            # The user insists: raised in the handler. (SIGTERM again: SIGINT may be ignored
            # here, as it is for a suite started in the background.)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # give the interpreter bytecodes at which to run it
                pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_is_a_stop_request_too():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with stop_on_signals() as request:
            os.kill(os.getpid(), signal.SIGINT)
            assert request.signal == "SIGINT"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_signal_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup ... &`
    try:
        with stop_on_signals() as request:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert request.signal is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


class SignallingEnv(gymnasium.Env):
    """Sends this process SIGTERM from inside its 50th step: the step must still finish."""

    def __init__(self):
        self.observation_space = spaces.Box(0, 100, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = self.total = 0
        self.finished_after_signal = False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0, 1], np.float32), {}

    def step(self, action):
        self.t += 1
        self.total += 1
        if self.total == 50:
            os.kill(os.getpid(), signal.SIGTERM)
            self.finished_after_signal = True  # reached: the handler raised nothing here
        return np.array([self.t, 1], np.float32), 1.0, self.t >= 10, False, {}


def test_training_stops_between_steps_and_saves(tmp_path):
    cfg = build_config(
        ["debug"],
        {
            "task": "signalling",
            "device": "cpu",
            "run.steps": 400,
            "run.envs": 1,
            "run.eval_every": 0,
            "run.env_workers": "inline",
            "run.save_every": 3600,
        },
    )
    env = SignallingEnv()
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        train(
            cfg,
            tmp_path,
            maker=lambda config, seed, mode="train": GymEnv(env, config.env.size, seed=seed),
            out=out,
            progress=False,
        )
    assert env.finished_after_signal
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    steps = [s for s, _ in list_checkpoints(tmp_path)]
    # Saved at the first check after the signal: 50 env steps and 5 resets are 55 observations,
    # of which the last (from the step that sent the signal) was still in flight.
    assert steps == [54]
    assert "interrupted: saving a checkpoint" in out.getvalue()


def test_evaluation_stops_at_a_check():
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("signal SIGTERM")

    class RandomAgent:
        def policy(self, obs, state, deterministic=True):
            return np.zeros((len(obs["reward"]),), np.int64), None

    cfg = build_config(["debug"], {"task": "counting", "device": "cpu"})
    with pytest.raises(KeyboardInterrupt):
        evaluate(RandomAgent(), lambda: GymEnv(SignallingEnv(), cfg.env.size, seed=None), [1, 2], check=check)
    assert len(calls) == 5


def test_a_request_outside_the_main_thread_never_fires():
    import threading

    seen: list[StopRequest] = []
    thread = threading.Thread(target=lambda: seen.append(stop_on_signals().__enter__()))
    thread.start()
    thread.join()
    assert seen[0].signal is None and signal.getsignal(signal.SIGTERM) is not seen[0].handle
