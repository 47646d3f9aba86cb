"""``dreamrl train --ranks N``: N training processes on this machine, started by torchrun's
own launcher (``torch.distributed.run``), and what the job's end means for the user.

The launcher runs ``python -m dreamrl <the same arguments>`` in N processes with torchrun's
environment (rank, size, a rendezvous on a free local port), watches them, and when one
fails stops the others and returns; nothing here spawns or watches processes itself. Each
process records an error that stops it in torchrun's error file (:func:`recorded_errors`),
so that the launcher, and torchrun run by hand, can say which rank stopped and why.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

from dreamrl.run.errors import RunError

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"  # set by torchrun for each process it starts
INTERRUPTED = 130  # the status of a rank stopped by a signal after saving (and of the CLI then)
CONFIG_ERROR = 2  # the CLI's status for a configuration refused
NO_ERROR_FILE = "<N/A>"  # torchrun's error_file of a process that recorded none
LOST = "RankLostError:"  # how a rank that lost contact with a failed one records its error


def launch(ranks: int, argv: Sequence[str]) -> int:
    """Run ``dreamrl <argv>`` in ``ranks`` processes on this machine and wait for them;
    returns the job's exit status: 0, 2 when every failed rank refused the configuration
    (each has said why), 130 when they were interrupted and saved. Any other failure is a
    :class:`RunError` naming each failed rank and how it ended."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun sets this for more than one process, with a banner; the same, quietly.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    flags = ["--standalone", f"--nproc-per-node={ranks}", "--max-restarts=0"]
    args = parse_args([*flags, "-m", "dreamrl", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = {f.exitcode for f in e.failures.values()}
        if codes <= {CONFIG_ERROR} or codes <= {INTERRUPTED}:
            return codes.pop()
        raise RunError(failure_summary(e.failures)) from None
    except SignalException as e:
        raise KeyboardInterrupt(str(e)) from None
    return 0


def failure_summary(failures: dict[int, Any]) -> str:
    """One line naming each failed rank (``{rank: ProcessFailure}``) and how it ended: first
    those that stopped on their own, then those that stopped because of them (they lost
    contact, or torchrun sent them SIGTERM to stop the job)."""
    causes, followers = [], []
    for rank, failure in sorted(failures.items()):
        message = failure.message
        if isinstance(message, dict):  # written by recorded_errors: {"message": ..., "extraInfo": ...}
            message = message.get("message", "")
        if failure.exitcode == -signal.SIGTERM:  # torchrun's own, to stop the others
            followers.append(str(rank))
        elif failure.exitcode < 0:
            causes.append(f"rank {rank} (PID {failure.pid}) was killed by {failure.signal_name()}")
        elif str(message).startswith(LOST):
            followers.append(str(rank))
        else:
            how = f"rank {rank} (PID {failure.pid}) stopped with exit status {failure.exitcode}"
            if message and failure.error_file != NO_ERROR_FILE:
                how += f" ({message})"
            causes.append(how)
    said = "; ".join(causes) or "a rank stopped"
    if followers:
        said += f"; rank{'s' * (len(followers) > 1)} {', '.join(followers)} then stopped with it"
    return f"{said}. Rerun the same command to resume from the newest checkpoint."


@contextlib.contextmanager
def recorded_errors() -> Iterator[None]:
    """Inside a process torchrun started, write an exception that leaves the block to
    torchrun's error file (then let it go on), so that the failure report names it."""
    try:
        yield
    except Exception as e:
        if os.environ.get(ERROR_FILE_ENV):
            from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

            ErrorHandler().record_exception(e)
        raise
