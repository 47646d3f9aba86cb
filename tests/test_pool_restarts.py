"""The env pool survives envs that raise, hang or die: the env is restarted, its episode
truncated, and a budget of failures counted in the env's own calls (a crash loop, or too
high a failure rate) stops a run whose env is broken, never one that is merely fast.

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
from dreamrl.envs.pool import EnvError, EnvPool, FailureBudget
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
def test_env_that_always_fails_stops_as_a_crash_loop(workers):
    always = functools.partial(make_faulty, "raise", "step", 1, always=True)
    budget = FailureBudget(crash_loop=3)
    with EnvPool([NORMAL, always], workers, budget=budget) as pool:
        steps(pool, 5)  # reset, fail, reset, fail, reset: two restarts
        assert pool.restarts == 2
        with pytest.raises(EnvError) as info:
            pool.step(np.zeros(2, np.int64))
    message = str(info.value)
    assert "env 1 failed 3 times in a row" in message and "crash loop" in message
    assert "RuntimeError: faulty env broke on step 1" in message


def test_an_env_that_raises_on_every_reset_stops_at_once_naming_it():
    """Its replacements fail too, within the same call: the run stops on its first step
    with the env's index and its error, after run.env_crash_loop failures."""
    broken = functools.partial(make_faulty, "raise", "reset", 1, always=True)
    with EnvPool([NORMAL, broken], "inline", budget=FailureBudget()) as pool:
        started = time.monotonic()
        with pytest.raises(EnvError) as info:
            pool.step(np.zeros(2, np.int64))
        assert pool.restarts == FailureBudget().crash_loop - 1
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert message.startswith("env 1 failed 5 times in a row")
    assert "faulty env broke on reset 1" in message


def test_a_flaky_env_is_restarted_for_as_long_as_the_run_lasts():
    """One failure in 250 steps, in a run as fast as the env allows: 6,000 steps, 24
    restarts, each counted and logged, and the run never stops. (A budget of failures per
    minute of wall time stopped such runs the sooner the faster they went.)"""
    flaky = functools.partial(make_faulty, "raise", "step", period=250)
    logged = []
    with EnvPool([flaky, NORMAL], "inline", budget=FailureBudget()) as pool:
        for _ in range(6_000):
            pool.step(np.zeros(2, np.int64))
            logged += pool.last_errors
            pool.last_errors.clear()
        assert pool.restarts >= 20 and len(logged) == pool.restarts
    assert all(line.startswith("env 0 failed and was restarted") for line in logged)
    assert f"restart {pool.restarts} of the run" in logged[-1]


def test_an_env_that_fails_too_often_stops_on_its_failure_rate():
    """One failure in 20 calls is no crash loop, but more than 2% of its calls."""
    often = functools.partial(make_faulty, "raise", "step", period=20)
    with EnvPool([often], "inline", budget=FailureBudget(rate=0.02, window=1000)) as pool:
        with pytest.raises(
            EnvError, match=r"env 0 failed 21 times in its last 1,000 calls.*env_failure_rate"
        ):
            for _ in range(2_000):
                pool.step(np.zeros(1, np.int64))
        assert pool.restarts == 20


def test_env_that_cannot_start_fails_fast():
    with pytest.raises(EnvError, match=r"env 1 could not start: ValueError: no such simulator"):
        EnvPool([NORMAL, broken_factory], "process")


def test_a_bad_env_id_in_a_worker_is_a_config_error():
    """No restarts and no "could not start" for settings no restart can fix: the CLI
    reports a ConfigError with exit status 2, as it does for an inline env."""
    bad = functools.partial(make_env, build_config([], {"task": "NoSuchEnv-v9"}), 0)
    with pytest.raises(ConfigError, match="NoSuchEnv-v9"):
        EnvPool([bad, bad], "process")


def test_config_rejects_budgets_out_of_range_and_names_the_old_keys():
    for key, value in [
        ("run.env_timeout", -1),
        ("run.env_crash_loop", 0),
        ("run.env_crash_steps", 0),
        ("run.env_failure_rate", 1.0),
        ("run.env_failure_window", 0),
    ]:
        with pytest.raises(ConfigError, match=key):
            build_config(overrides={key: value})
    for old in ("run.env_restarts", "run.env_restart_window"):
        with pytest.raises(ConfigError, match=rf"{old}: no longer a setting.*run\.env_crash_loop"):
            build_config(overrides={old: 5})


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
