"""Metric sinks: ``metrics.jsonl`` for scripts, TensorBoard for people.

Every record is one JSON object on its own line with at least ``step`` (env steps).
Keys are namespaced: ``loss/``, ``wm/``, ``actor/``, ``imag/``, ``grad/``, ``episode/``,
``eval/``, ``fps/``, ``replay/``, ``mem/``, ``time/``, ``diag/``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    """Writes records to ``metrics.jsonl`` and, when available, TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = RunDir(run_dir).metrics
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - open for the run, closed by close()
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional at run time
                self._tb = None
            else:
                self._tb = SummaryWriter(str(RunDir(run_dir).tensorboard))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        record: dict[str, Any] = {"step": int(step)}
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                v = None  # JSON has no NaN; a null says the value was not finite
            record[k] = v
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def flush(self) -> None:
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


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
