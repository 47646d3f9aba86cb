"""Where dreamrl reports: ``sys.stdout`` as it is when a function is called, not the
stream it was when dreamrl was imported, so ``contextlib.redirect_stdout`` (a notebook,
a test, a caller collecting a log) catches every line."""

from __future__ import annotations

import contextlib
import io
import sys

from dreamrl.compare import compare
from dreamrl.run.progress import Progress


def test_progress_notes_go_to_the_stdout_of_the_moment():
    caught = io.StringIO()
    with contextlib.redirect_stdout(caught):
        progress = Progress(total=10, initial=0, enabled=False)
        progress.note("an env restarted")
    assert progress.out is caught
    assert caught.getvalue() == "an env restarted\n"
    assert Progress(total=10, initial=0).out is sys.stdout


def test_compare_reports_to_the_stdout_of_the_moment(tmp_path, monkeypatch):
    from dreamrl import agents

    from fixtures import fake_trainer

    monkeypatch.setitem(agents.TRAINERS, "fake", "fixtures.fake_trainer:train")
    monkeypatch.setattr(fake_trainer, "CALLS", [])
    caught = io.StringIO()
    with contextlib.redirect_stdout(caught):
        compare(
            tmp_path / "cmp",
            "CartPole-v1",
            ["dreamer"],
            1,
            200,
            ["debug"],
            {"agent.kind": "fake"},
            threshold=100.0,
            progress=False,
            reps=50,
        )
    assert "1 runs: 0 done already, 1 to train" in caught.getvalue()
    assert "[1/1] dreamer seed 0: training 200 env steps" in caught.getvalue()
