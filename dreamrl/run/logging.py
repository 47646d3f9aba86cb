"""Metric sinks: ``metrics.jsonl`` for scripts, TensorBoard for people.

Every record is one JSON object on its own line with at least ``step`` (env steps).
Keys are namespaced: ``loss/``, ``wm/``, ``actor/``, ``imag/``, ``grad/``, ``episode/``,
``eval/``, ``fps/``, ``replay/``, ``mem/``, ``time/``, ``diag/``, ``mpc/`` (an agent that plans).
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dreamrl.run.disk import is_disk_full, write_atomic
from dreamrl.rundir import RunDir

# The parts of the training loop whose share of wall time is logged as time/<part>_frac.
# "env" is the time the loop waits for its envs: all of their stepping when they run
# inline, and with worker processes only what training did not hide.
LOOP_PARTS = ("train", "env", "act", "eval", "save")


class Mean:
    """Running means of scalar metrics between writes."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] += float(v)
            self.counts[k] += 1

    def result(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return out


class MetricsLogger:
    """Writes records to ``metrics.jsonl`` and, when available, TensorBoard.

    TensorBoard writes its event file from a thread of its own, where a full disk would
    end in a traceback on stderr while the run went on. While the logger is open, such a
    failure is caught there and raised by the next :meth:`write` instead, so the run stops
    the way every other writer's full disk stops it (:mod:`dreamrl.run.disk`).
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = RunDir(run_dir).metrics
        _drop_partial_line(self.path)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - open for the run, closed by close()
        self._tb: Any = None
        self._thread_error: BaseException | None = None
        self._previous_hook: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time
                self._tb = None
            else:
                self._previous_hook = threading.excepthook
                threading.excepthook = self._thread_failed
                purge = tensorboard_purge_step(run_dir)
                self._tb = SummaryWriter(str(RunDir(run_dir).tensorboard), purge_step=purge)

    def _thread_failed(self, args: Any) -> None:
        if args.exc_value is not None and is_disk_full(args.exc_value):
            self._thread_error = args.exc_value
            return
        self._previous_hook(args)

    def write(self, step: int, metrics: Mapping[str, Any], offline_updates: int | None = None) -> None:
        """Append one record at env step ``step``. A record of training from a dataset
        (``offline_updates`` given: the updates taken so far) keeps ``step`` in the file,
        but TensorBoard, whose curves need an axis that moves, plots it under
        ``offline/<name>`` against the updates; a fine-tune's online records then start
        their own curves at env step 0 instead of doubling back over the offline ones."""
        if self._thread_error is not None:
            raise self._thread_error
        record: dict[str, Any] = {"step": int(step)}
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                v = None  # JSON has no NaN; a null says the value was not finite
            record[k] = v
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            prefix, axis = ("", step) if offline_updates is None else ("offline/", offline_updates)
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(prefix + k, v, axis)

    def flush(self) -> None:
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        try:
            self._file.close()
            if self._tb is not None:
                self._tb.close()
        finally:
            if self._previous_hook is not None and threading.excepthook == self._thread_failed:
                threading.excepthook = self._previous_hook
        if self._thread_error is not None:
            raise self._thread_error


def _drop_partial_line(path: Path) -> None:
    """Cut a last record that was only half written (the disk filled mid-line), so that
    the records appended after a resume start on a line of their own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


def tensorboard_purge_step(run_dir: Path) -> int | None:
    """Where TensorBoard is to forget earlier event files' points when a run resumes: past
    the last env step ``metrics.jsonl`` keeps (a resume has cut what came after its
    checkpoint, :func:`drop_records_after`), so that the points of a session killed after
    its last checkpoint are not drawn beside the resumed session's. None for a new run, and
    for one that trained from a dataset, whose points are plotted against updates instead
    (purging is by one axis for every tag)."""
    records = read_metrics(run_dir)
    if not records or any(r.get("step") == 0 and r.get("train/updates") for r in records):
        return None
    return max(int(r.get("step", 0)) for r in records) + 1


def drop_records_after(run_dir: Path, step: int, updates: int) -> int:
    """Remove from ``run_dir``'s ``metrics.jsonl`` what a session wrote after the
    checkpoint a resume starts from (at env step ``step`` with ``updates`` updates): the
    records of a timeline that no longer happened, which the resumed run writes again.
    Returns how many were removed (a half-written last line counts as one).

    A record is past the checkpoint if its env step is later, or, as a session training
    from a dataset logs every record at env step 0, if its ``train/updates`` is more.
    Records up to the checkpoint were all written before it was saved: the loop logs and
    evaluates before it checkpoints.
    """
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines(keepends=True):
        try:
            record = json.loads(line)
        except ValueError:  # the half-written last line of a session that was killed
            dropped += 1
            continue
        later = record.get("step", 0) > step or (record.get("train/updates") or 0) > updates
        if later:
            dropped += 1
        else:
            kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        write_atomic(path, "".join(kept))
    return dropped


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's ``metrics.jsonl``."""
    path = RunDir(run_dir).metrics
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loop_seconds(records: Sequence[Mapping[str, Any]], since_step: int = 0) -> dict[str, float]:
    """Seconds spent in each part of the training loop, from ``time/<part>_frac`` records.

    Sums over the log windows that begin at env step ``since_step`` or later, each
    window's length taken from the ``time/elapsed`` clock of its record and the one
    before. Returns ``wall`` (seconds covered), ``steps`` (env steps covered) and one
    entry per :data:`LOOP_PARTS` (NaN for a part some record lacks).
    """
    split = [r for r in records if "time/train_frac" in r and "time/elapsed" in r]
    totals = dict.fromkeys(("wall", "steps", *LOOP_PARTS), 0.0)
    for before, r in itertools.pairwise(split):
        window = float(r["time/elapsed"]) - float(before["time/elapsed"])
        if before["step"] < since_step or not window > 0:
            continue  # before the span asked for; or records written at one moment
        totals["wall"] += window
        totals["steps"] += r["step"] - before["step"]
        for part in LOOP_PARTS:
            totals[part] += float(r.get(f"time/{part}_frac", math.nan)) * window
    return totals
