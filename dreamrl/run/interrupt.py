"""Stopping a run on a signal, at a point where stopping is safe.

SIGTERM (``kill``, a scheduler's pre-emption, ``docker stop``) and SIGINT (Ctrl-C) only
set a flag; the training loop looks at it between env steps (and evaluation between its
own) and raises KeyboardInterrupt there, so the run saves a checkpoint and the CLI exits
with 130. Raising from the handler itself would land the exception at whatever bytecode
was running: half way through TensorBoard's writer, a lazy import or a library's
registration, whose state the save and the interpreter's exit then trip over. A second
signal raises at once, for a user who will not wait for the step to end.

In data-parallel training the ranks must stop at the same step, or the save's collectives
would meet a rank still training: there the request is ``deferred``, :meth:`check` never
raises, and the loop stops once the ranks have agreed that one of them was signalled
(:meth:`dreamrl.run.distributed.Ranks.agree`). A second signal then exits at once without
saving, as a lone rank cannot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Whether a stop signal has arrived; :meth:`check` turns it into KeyboardInterrupt."""

    def __init__(self, deferred: bool = False) -> None:
        self.signal: str | None = None  # the name of the first signal, once one came
        self.deferred = deferred  # the loop, not check(), stops (data-parallel ranks)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            if self.deferred:
                raise SystemExit(128 + signum)
            raise KeyboardInterrupt(f"signal {name}, the second")
        self.signal = name
        # Said at once, as a large model's update can take minutes. Straight to the file
        # descriptor: sys.stderr may be in the middle of a write this handler interrupted.
        note = f"\n{name}: stopping after the current step to save a checkpoint; again to stop now\n"
        with contextlib.suppress(OSError):
            os.write(2, note.encode())

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop signal has arrived (unless ``deferred``);
        called at safe points."""
        if self.signal is not None and not self.deferred:
            raise KeyboardInterrupt(f"signal {self.signal}")


@contextlib.contextmanager
def stop_on_signals(deferred: bool = False) -> Iterator[StopRequest]:
    """Route SIGTERM and SIGINT to a :class:`StopRequest` while inside, restoring the
    previous handlers after. A signal this process ignores (SIGINT under ``nohup ... &``)
    stays ignored, and outside the main thread, where Python cannot install handlers,
    nothing changes and the request never fires. Env workers are spawned: they keep the
    default handlers. ``deferred``: see the module docstring."""
    request = StopRequest(deferred)
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, request.handle)
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
