"""A disk that fills mid-run: every writer meets it the same way. The run stops with one
message naming the disk and the newest intact checkpoint (exit status 1, no traceback),
leaves no half-written file that a resume would take for a good one, and the same
command resumes once there is space again."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import sys
import time

import pytest

from dreamrl.config import build_config
from dreamrl.replay import Replay
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.disk import is_disk_full, write_atomic
from dreamrl.run.errors import RunError
from dreamrl.run.logging import MetricsLogger, read_metrics
from dreamrl.run.train import make_replay, train


def full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


class FillingLogger(MetricsLogger):
    """The real logger, whose writes fail once the run has a checkpoint (and whose
    close fails too, as a full disk's last flush does)."""

    def __init__(self, run_dir):
        super().__init__(run_dir, tensorboard=False)
        self.run_dir = run_dir
        self.filled = False

    def write(self, step, metrics, offline_updates=None):
        self.filled = self.filled or bool(list_checkpoints(self.run_dir))
        if self.filled:
            raise full()
        super().write(step, metrics, offline_updates)

    def close(self):
        super().close()
        if self.filled:
            raise full()


def config(**overrides):
    base = {"task": "CartPole-v1", "run.log_every": 0, "run.eval_every": 0, "run.eval_eps": 0}
    return build_config(["debug"], {**base, "run.save_every": 1, **overrides})


def test_a_full_disk_under_the_metrics_stops_the_run_with_one_message(tmp_path):
    with pytest.raises(RunError) as info:
        train(config(**{"run.steps": 100_000}), tmp_path, make_logger=FillingLogger, out=io.StringIO())
    message = str(info.value)
    newest = list_checkpoints(tmp_path)[-1][1]
    assert f"the disk holding {tmp_path}" in message and "is full" in message
    assert f"The newest intact checkpoint is {newest}" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_full_disk_under_the_replay_leaves_no_partial_chunk(tmp_path):
    class FillingReplay(Replay):
        def _write_chunk(self, stream, start, size):
            if start >= 128:  # the disk fills once a stream holds 128 steps, after training began
                raise full()
            super()._write_chunk(stream, start, size)

    def filling(config, spaces, directory):
        plain = make_replay(config, spaces, directory)
        args = (plain.spaces, plain.slots, plain.streams, plain.length, True, 128, directory, config.seed)
        return FillingReplay(*args)

    with pytest.raises(RunError, match="is full"):
        train(config(**{"run.steps": 100_000}), tmp_path, make_replay=filling, out=io.StringIO())
    assert not [p for p in (tmp_path / "replay").iterdir() if not p.name.endswith(".npz")]


def test_a_file_written_atomically_is_whole_or_absent(tmp_path):
    target = tmp_path / "result.json"
    write_atomic(target, "old")

    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]  # fails mid-write
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert is_disk_full(RuntimeError("wrapped")) is False
    try:
        try:
            raise full()
        except OSError as e:
            raise RuntimeError("while saving") from e
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)


def test_a_resume_drops_a_half_written_metrics_record(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "loss/')  # the disk filled here
    MetricsLogger(tmp_path, tensorboard=False).close()
    assert read_metrics(tmp_path) == [{"step": 1}]


# ----------------------------------------------------------------------------- a real disk


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"needs to mount a small tmpfs (root): {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_tmpfs_filled_by_another_process_mid_run(small_disk):
    logdir = small_disk / "run"
    base = [sys.executable, "-m", "dreamrl", "train", "--env", "CartPole-v1", "--logdir", str(logdir)]
    base += ["--preset", "debug", "--no-progress", "run.eval_every=0", "run.eval_eps=0"]
    base += ["run.log_every=0", "run.save_every=2", "compute.threads=1"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    run = subprocess.Popen([*base, "--steps", "100000"], **pipes)
    filler = small_disk / "filler"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list_checkpoints(logdir):
            assert run.poll() is None, run.communicate()
            time.sleep(0.1)
        assert list_checkpoints(logdir)
        # Another process takes every byte that is left.
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        out, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, out + err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"the disk holding {logdir}" in lines[0], err
    kept = list_checkpoints(logdir)
    assert kept and f"The newest intact checkpoint is {kept[-1][1]}" in lines[0], lines[0]
    assert not list((logdir / "checkpoints").glob(".tmp-*"))

    os.remove(filler)
    again = subprocess.run(
        [*base, "--steps", str(kept[-1][0] + 20)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming from" in again.stdout
    shutil.rmtree(logdir, ignore_errors=True)
