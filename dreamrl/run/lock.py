"""One writer per run dir: an exclusive lock held for the life of the training process.

Two processes training into one run dir would interleave its metrics and write
overlapping replay chunks of one stream, and a later resume would load a mix of both.
The lock is ``fcntl.flock`` on ``<run dir>/.lock``: the kernel releases it when the
process ends in any way (``kill -9`` included), so a stale lock file never blocks a
rerun. The file holds the holder's PID so that a refused writer can say who holds it.
Readers (``dreamrl eval``, ``report``, ``diagnose``) never take it. In data-parallel
training rank 0 holds it for the job, and every other rank the lock of its replay shard
(:mod:`dreamrl.run.distributed`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from dreamrl.config import ConfigError
from dreamrl.rundir import RunDir


class RunDirBusyError(ConfigError):
    """Another live process is writing this run dir (the CLI exits with status 2)."""


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    except OSError:
        return "unknown"
    return text or "unknown"


@contextlib.contextmanager
def exclusive(run_dir: Path, path: Path | None = None) -> Iterator[None]:
    """Hold ``run_dir``'s lock inside the block; :class:`RunDirBusyError` at once, naming the
    holder's PID, when another process holds it. ``run_dir`` must exist. ``path`` names
    another lock file of the run (a rank's replay shard's, in data-parallel training)."""
    path = path or RunDir(run_dir).lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusyError(
                f"{run_dir} is being written by another process (PID {_holder(fd)}): one run dir takes "
                "one writer. Wait for it to finish or stop it (it resumes), or use another --logdir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
