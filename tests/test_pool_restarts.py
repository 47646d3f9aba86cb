"""The env pool survives envs that raise, hang or die: the env is restarted, its episode
truncated, and a budget of failures per time window stops a run whose env is broken.

The faulty envs live in ``tests/fixtures/faulty_envs.py`` so spawned workers can
import them by module name.
"""

from __future__ import annotations

import functools
import io
import time
from pathlib import Path

import numpy as np
import pytest

from dreamrl.config import ConfigError, build_config
from dreamrl.envs import make_env
from dreamrl.envs.pool import EnvError, EnvPool
from dreamrl.run.logging import read_metrics
from dreamrl.run.train import train

from fixtures.faulty_envs import EPISODE, broken_factory, flaky_maker, make_faulty

NORMAL = functools.partial(make_faulty, "none")


def steps(pool: EnvPool, n: int) -> list[dict[str, np.ndarray]]:
    return [pool.step(np.zeros(pool.size, np.int64)) for _ in range(n)]


def column(out: list[dict[str, np.ndarray]], key: str, env: int) -> list:
    return [o[key][env].tolist() for o in out]


def once(tmp_path: Path, how: str, where: str = "step", at: int = 3) -> functools.partial:
    """A factory whose env misbehaves once across all its restarts."""
    return functools.partial(make_faulty, how, where, at, marker=str(tmp_path / f"{how}-{where}"))


# ----------------------------------------------------------------------------- one failure


@pytest.mark.parametrize("workers", ["process", "inline"])
def test_raising_env_is_restarted_with_a_truncated_episode(tmp_path, workers):
    with EnvPool([once(tmp_path, "raise"), NORMAL], workers) as pool:
        out = steps(pool, EPISODE + 2)
        assert pool.parallel == (workers == "process")
        assert pool.restarts == 1
        assert len(pool.last_errors) == 1
        assert "env 0" in pool.last_errors[0]
        assert "RuntimeError: faulty env broke on step 3" in pool.last_errors[0]
    # env 0: reset, 2 good steps, the 3rd raises: its last good observation, truncated.
    assert column(out, "is_last", 0)[:5] == [False, False, False, True, False]
    assert column(out, "is_terminal", 0)[:5] == [False] * 5
    assert column(out, "is_first", 0)[:5] == [True, False, False, False, True]
    assert out[3]["vector"][0].tolist() == out[2]["vector"][0].tolist() == [2, 1]
    assert out[3]["reward"][0] == 0.0
    assert out[4]["vector"][0].tolist() == [0, 1]  # the new env's reset
    assert column(out, "vector", 0)[5:7] == [[1, 1], [2, 1]]  # and it steps on
    # env 1 is untouched: one uninterrupted episode of EPISODE steps, then a reset.
    assert column(out, "is_last", 1) == [False] * EPISODE + [True, False]
    assert column(out, "is_first", 1) == [True] + [False] * EPISODE + [True]
    assert column(out, "reward", 1) == [0.0] + [1.0] * EPISODE + [0.0]


def test_hung_env_times_out_and_is_restarted(tmp_path):
    with EnvPool([once(tmp_path, "hang", at=2), NORMAL], "process", timeout=1.0) as pool:
        steps(pool, 2)
        start = time.monotonic()
        out = pool.step(np.zeros(2, np.int64))
        took = time.monotonic() - start
        assert 0.9 < took < 6.0  # the 1 s timeout, a kill and a fresh worker; not the 30 s hang
        assert bool(out["is_last"][0]) and not out["is_terminal"][0] and not out["is_last"][1]
        assert out["vector"][1].tolist() == [2, 1]
        assert pool.restarts == 1
        assert "env 0" in pool.last_errors[0] and "timed out after 1 s" in pool.last_errors[0]
        nxt = pool.step(np.zeros(2, np.int64))
        assert nxt["is_first"].tolist() == [True, False]


def test_dead_worker_is_restarted(tmp_path):
    with EnvPool([NORMAL, once(tmp_path, "die", at=2)], "process") as pool:
        out = steps(pool, 4)
        assert pool.restarts == 1
        assert "env 1" in pool.last_errors[0]
        assert "worker process died with exit code 3" in pool.last_errors[0]
    assert column(out, "is_last", 1) == [False, False, True, False]
    assert column(out, "is_first", 1) == [True, False, False, True]
    assert column(out, "is_last", 0) == [False] * 4


@pytest.mark.parametrize(("workers", "how"), [("process", "die"), ("process", "raise"), ("inline", "raise")])
def test_failed_reset_is_retried_within_the_call(tmp_path, workers, how):
    with EnvPool([once(tmp_path, how, "reset", at=1), NORMAL], workers) as pool:
        first = pool.step(np.zeros(2, np.int64))
        assert first["is_first"].tolist() == [True, True]  # a valid reset, not a truncation
        assert first["is_last"].tolist() == [False, False]
        assert pool.restarts == 1 and "env 0" in pool.last_errors[0]
        assert pool.step(np.zeros(2, np.int64))["vector"][:, 0].tolist() == [1, 1]


# ----------------------------------------------------------------------------- the budget


@pytest.mark.parametrize("workers", ["process", "inline"])
def test_env_that_always_fails_stops_after_the_budget(workers):
    always = functools.partial(make_faulty, "raise", "step", 1, always=True)
    with EnvPool([NORMAL, always], workers, restarts=2, window=60) as pool:
        steps(pool, 5)  # reset, fail, reset, fail, reset: two restarts
        assert pool.restarts == 2
        with pytest.raises(EnvError) as info:
            pool.step(np.zeros(2, np.int64))
    message = str(info.value)
    assert "env 1 failed 3 times within 60 s" in message
    assert "RuntimeError: faulty env broke on step 1" in message


def test_failures_outside_the_window_are_forgotten():
    always = functools.partial(make_faulty, "raise", "step", 1, always=True)
    with EnvPool([always, NORMAL], "inline", restarts=1, window=0.3) as pool:
        steps(pool, 2)  # reset, fail (1 of 1 allowed)
        time.sleep(0.4)
        steps(pool, 2)  # reset, fail: the first failure has left the window
        assert pool.restarts == 2
        pool.step(np.zeros(2, np.int64))
        with pytest.raises(EnvError, match=r"env 0 failed 2 times within 0\.3 s"):
            pool.step(np.zeros(2, np.int64))


def test_env_that_cannot_start_fails_fast():
    with pytest.raises(EnvError, match=r"env 1 could not start: ValueError: no such simulator"):
        EnvPool([NORMAL, broken_factory], "process")


def test_a_bad_env_id_in_a_worker_is_a_config_error():
    """No restarts and no "could not start" for settings no restart can fix: the CLI
    reports a ConfigError with exit status 2, as it does for an inline env."""
    bad = functools.partial(make_env, build_config([], {"task": "NoSuchEnv-v9"}), 0)
    with pytest.raises(ConfigError, match="NoSuchEnv-v9"):
        EnvPool([bad, bad], "process")


def test_config_rejects_negative_budgets():
    for key in ("run.env_timeout", "run.env_restarts", "run.env_restart_window"):
        with pytest.raises(ConfigError, match=key):
            build_config(overrides={key: -1})


# ----------------------------------------------------------------------------- train loop


def test_train_loop_survives_a_flaky_env_and_logs_restarts(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTY_MARKER_DIR", str(tmp_path))  # each env fails once: few slow restarts
    overrides = {
        "task": "flaky",
        "compute.device": "cpu",
        "run.steps": 40,
        "run.envs": 2,
        "run.env_workers": "process",
        "run.env_timeout": 2,
        "run.eval_eps": 0,
        "run.eval_every": 0,
        "run.log_every": 0,
    }
    out = io.StringIO()
    run_dir = tmp_path / "run"
    state = train(
        build_config(["debug"], overrides), run_dir, make_env=flaky_maker, out=out, progress=True
    ).state
    assert state.env_steps == 40
    restarts = [r["env/restarts"] for r in read_metrics(run_dir) if "env/restarts" in r]
    assert restarts and restarts[-1] == 2  # each env failed once, on its 8th step
    assert "env 0 failed and was restarted" in out.getvalue()
    assert "env 1 failed and was restarted" in out.getvalue()
