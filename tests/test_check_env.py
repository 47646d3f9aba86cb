"""`dreamrl check-env`: a good env passes; broken ones are reported by key and step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamrl.config import build_config
from dreamrl.envs import make_env
from dreamrl.envs.check import check_env, contract_errors
from dreamrl.spaces import Space

ROOT = Path(__file__).resolve().parents[1]


def run_check(task: str, steps: int = 60):
    import fixtures.broken_envs  # noqa: F401 - registers the broken envs

    config = build_config([], {"task": task})
    env = make_env(config, 0)
    try:
        return check_env(config, env, steps=steps, seed=0)
    finally:
        env.close()


def test_cartpole_passes_with_ranges_and_speed():
    report = run_check("CartPole-v1", steps=200)
    assert report.ok, report.errors
    assert report.deterministic is True
    assert report.episodes >= 1 and report.terminations == report.episodes
    assert report.stats["reward"].low == 1.0 and report.stats["reward"].high == 1.0
    assert report.steps_per_s > 0
    assert "vector: float32[4]" in report.text()


def test_nan_observation_is_an_error_naming_key_and_step():
    report = run_check("NaNObs-v0")
    assert not report.ok
    assert any("step 5: vector has 1 NaN/inf" in e for e in report.errors)


def test_values_outside_declared_bounds_are_an_error_naming_the_bounds():
    report = run_check("OutOfBounds-v0")
    assert any("outside the declared bounds [-1, 1]" in e and e.startswith("vector") for e in report.errors)


def test_unseeded_env_is_flagged_not_deterministic():
    report = run_check("Unseeded-v0")
    assert report.deterministic is False
    assert any("does not reproduce" in w for w in report.warnings)


def test_contract_errors_name_key_shape_and_dtype():
    space = {"image": Space("uint8", (64, 64, 3))}
    import numpy as np

    step = {
        "image": np.zeros((32, 32, 3), np.float32),
        "reward": np.float32(0),
        "is_first": np.bool_(True),
        "is_last": np.bool_(False),
        "is_terminal": np.bool_(True),
    }
    errors = contract_errors(step, space, "reset")
    assert "reset: image has shape (32, 32, 3), the space says (64, 64, 3)" in errors
    assert "reset: image has dtype float32, the space says uint8" in errors
    assert "reset: is_terminal without is_last" in errors


@pytest.mark.parametrize("task, code", [("CartPole-v1", 0), ("fixtures.broken_envs:NaNObs-v0", 1)])
def test_cli_exit_status_and_json(task, code):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", "check-env", task, "--steps", "50", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == code, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is (code == 0)
    assert result["obs_space"]["vector"]["dtype"] == "float32"
