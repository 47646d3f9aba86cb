"""One writer per run dir, with real processes: a second ``dreamrl train`` on a run dir
in use stops at once with status 2 naming the dir and the holder's PID; ``eval``,
``report`` and ``diagnose`` read it meanwhile; after ``kill -9`` the lock is gone and the
same command resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.lock import RunDirBusyError, exclusive

TRAIN = [
    "train",
    "--env",
    "CartPole-v1",
    "--preset",
    "debug",
    "--no-progress",
    "run.eval_every=0",
    "run.eval_eps=0",
    "run.log_every=1",
    "run.save_every=1",
    "compute.threads=1",
]


def dreamrl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dreamrl", *args], capture_output=True, text=True, timeout=timeout
    )


def test_the_lock_refuses_a_second_holder_in_this_process_too(tmp_path):
    busy = rf"{tmp_path} is being written by .*PID {os.getpid()}"
    with exclusive(tmp_path), pytest.raises(RunDirBusyError, match=busy), exclusive(tmp_path):
        pass
    with exclusive(tmp_path):  # released on leaving
        pass


def test_a_second_writer_is_refused_while_readers_read_and_kill_9_frees_the_run_dir(tmp_path):
    logdir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "dreamrl", *TRAIN, "--logdir", str(logdir), "--steps", "1000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list_checkpoints(logdir):
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            time.sleep(0.1)
        assert list_checkpoints(logdir), "the first run wrote no checkpoint in time"

        second = dreamrl(*TRAIN, "--logdir", str(logdir), "--steps", "1000000", timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"{logdir} is being written by another process (PID {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr

        for reader in (
            ["eval", "--logdir", str(logdir), "--episodes", "1"],
            ["report", "--logdir", str(logdir)],
            ["diagnose", "--logdir", str(logdir), "--episodes", "1", "--context", "4", "--horizon", "3"],
        ):
            proc = dreamrl(*reader)
            assert proc.returncode == 0, (reader, proc.stdout + proc.stderr)
        assert first.poll() is None  # the writer was never disturbed
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()

    done = list_checkpoints(logdir)[-1][0]
    again = dreamrl(*TRAIN, "--logdir", str(logdir), "--steps", str(done + 20))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming from" in again.stdout
    assert list_checkpoints(logdir)[-1][0] >= done + 20
