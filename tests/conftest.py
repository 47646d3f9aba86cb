"""Settings and fixtures for the whole suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One torch thread in the test process, whatever the order the tests run in (test_bench.py
# used to set it for every test after it; test_behaviour_pin.py pins a one-thread run). On
# a 2-core machine that is busy with anything else, two threads per process wait on each
# other: a debug run's update took seconds instead of a quarter of one.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cartpole_run(tmp_path_factory) -> Path:
    """A run dir of ``dreamrl train``: 300 env steps of the debug preset on CartPole-v1,
    evaluated on 2 episodes at 150 and 300, trained once for every test that reads one
    (test_cli.py, test_report.py). Tests that write into a run dir copy it first."""
    logdir = tmp_path_factory.mktemp("cartpole") / "run"
    args = ["train", "--env", "CartPole-v1", "--logdir", str(logdir), "--preset", "debug"]
    args += ["--steps", "300", "--no-progress", "run.eval_every=150", "run.eval_eps=2", "run.log_every=0"]
    # One thread: a model this small gains nothing from two, and on a busy 2-core machine
    # two threads contend (300 steps took 80 s with two and 6 s with one beside a benchmark).
    args += ["compute.threads=1"]
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"dreamrl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return logdir
