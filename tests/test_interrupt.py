"""Stop signals: the handler only records the first (a check raises it where the caller
chooses) and raises on the second; handlers are restored after. The training loop's
answer to one is tested in test_train_loop.py."""

from __future__ import annotations

import os
import signal

import pytest

from dreamrl.run.interrupt import stop_on_signals


def test_a_signal_is_recorded_and_raised_only_when_checked(capfd):
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as request:
        request.check()  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before kill returns to Python code
        assert request.signal == "SIGTERM"
        assert "SIGTERM: stopping after the current step" in capfd.readouterr().err  # said at once
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


def test_outside_the_main_thread_no_handler_is_installed():
    import threading

    seen: list[object] = []

    def enter() -> None:
        with stop_on_signals():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [before]
