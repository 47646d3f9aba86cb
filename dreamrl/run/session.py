"""What the online loop (:mod:`.train`) and the offline one (:mod:`.offline`) share.

A :class:`Session` is one training session over a run dir. It keeps the time spent in
each part of the loop, the skipped-update count, the tail of every metrics record, how
an evaluation is run and logged, and the guard around the loop body: a checkpoint on
an interrupt, a disk-full error turned into one message, the logger closed either way,
and the summary printed at the end. A subclass supplies its loop body and whatever
differs between learning from env steps and from a dataset (logging, saving, the
summary's first line).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import math
import os
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO

from dreamrl.agents.base import Agent, TrainResult
from dreamrl.config import Config
from dreamrl.replay import Replay
from dreamrl.run.checkpoint import latest_checkpoint, list_checkpoints
from dreamrl.run.disk import disk_full_message, is_disk_full
from dreamrl.run.errors import RunError
from dreamrl.run.evaluate import EvalResult, evaluate_as_run_says
from dreamrl.run.interrupt import StopRequest
from dreamrl.run.logging import LOOP_PARTS, Mean
from dreamrl.run.progress import Progress
from dreamrl.run.state import LoopState
from dreamrl.rundir import RunDir

if TYPE_CHECKING:  # train.py builds on this module: its types only, to avoid a cycle
    from dreamrl.run.train import EnvMaker, Hooks, Logger


def time_split(seconds: dict[str, float], wall: float) -> dict[str, float]:
    """Fraction of ``wall`` seconds spent in each part of the loop (0 for a part never
    timed); the rest (logging, progress) is what the fractions leave out of 1."""
    wall = max(wall, 1e-9)
    return {part: seconds.get(part, 0.0) / wall for part in LOOP_PARTS}


def resident_mb() -> tuple[float, float]:
    """(now, peak) resident memory of this process in MB: the peak from getrusage, the
    current figure from /proc (NaN where there is none)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            now_mb = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return math.nan, peak_mb
    return now_mb, max(now_mb, peak_mb)  # read a moment apart: the process may have grown


def check_weights_finite(agent: Agent, run_dir: Path, position: str) -> None:
    """RunError unless ``agent``'s weights are finite: a checkpoint of broken weights
    would replace a good one. ``position`` says where the run is ("at env step 1,000")."""
    if not agent.weights_finite():
        kept = list_checkpoints(run_dir)
        raise RunError(
            f"the weights are no longer finite {position}: not saving them. "
            f"The last checkpoint, {kept[-1][1].name if kept else '(none)'}, is from before."
        )


class Session(abc.ABC):
    """One training session over a run dir: what both loops do around their updates.

    :meth:`run` runs the subclass's :meth:`_loop`, then logs and checkpoints once more.
    """

    # The summary's split of wall time: a note after a part's share, and the parts left
    # out (those the loop never runs).
    PART_NOTES: ClassVar[Mapping[str, str]] = {}
    PARTS_NOT_SHOWN: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        hooks: Hooks,
        out: TextIO,
        state: LoopState,
        agent: Agent,
        replay: Replay,
        logger: Logger,
        make_env: EnvMaker,  # for evaluation's envs
        interrupt: StopRequest,  # checked between steps: a stop signal becomes KeyboardInterrupt there
        bar: Progress,
    ):
        self.config, self.run_dir, self.hooks, self.out, self.state = config, run_dir, hooks, out, state
        self.agent, self.replay, self.logger, self.make_env = agent, replay, logger, make_env
        self.interrupt, self.bar = interrupt, bar
        self.skipped_in_row = 0
        self.train_mean = Mean()
        self.session_start = time.time()
        self.elapsed_before = state.elapsed
        self.last_log = self.last_save = time.time()
        # Seconds per loop part since the last log, and over this session.
        self.busy: dict[str, float] = dict.fromkeys(LOOP_PARTS, 0.0)
        self.busy_session: dict[str, float] = dict.fromkeys(LOOP_PARTS, 0.0)

    @abc.abstractmethod
    def _loop(self) -> None:
        """Train until the run's budget is spent (or ``hooks.stop`` says so)."""

    @abc.abstractmethod
    def log(self, now: float) -> None:
        """Write one metrics record of what happened since the last."""

    @abc.abstractmethod
    def _unlogged(self) -> bool:
        """Whether anything happened since the last record (the final log skips it if not)."""

    @abc.abstractmethod
    def save(self) -> None:
        """Checkpoint everything a resume needs."""

    @abc.abstractmethod
    def _position(self) -> str:
        """Where the run is, for a message: "at env step 1,000"."""

    @abc.abstractmethod
    def _done_line(self) -> str:
        """The summary's first line: what this session trained."""

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Count the wall time inside towards ``part`` of the loop."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.busy[part] += seconds
            self.busy_session[part] += seconds

    def elapsed(self) -> float:
        """Wall seconds of training over every session of this run."""
        return self.elapsed_before + time.time() - self.session_start

    def _count_skipped(self, result: TrainResult) -> None:
        """Count an update skipped for a non-finite loss or gradient; RunError once
        ``run.skip_limit`` come in a row."""
        if result.applied:
            self.skipped_in_row = 0
            return
        self.state.skipped_updates += 1
        self.skipped_in_row += 1
        limit = self.config.run.skip_limit
        if self.skipped_in_row >= limit:
            raise RunError(
                f"{self.skipped_in_row} updates in a row had a non-finite {', '.join(result.nonfinite)} "
                f"(loss term, or the gradient) {self._position()}; stopping (run.skip_limit={limit})"
            )

    def _write_log(self, now: float, dt: float, metrics: dict[str, Any]) -> None:
        """Add the time and memory figures to ``metrics``, write it, and start the next
        log's window at ``now`` (``dt`` seconds after the last)."""
        metrics["time/elapsed"] = self.elapsed()
        for part, frac in time_split(self.busy, dt).items():
            metrics[f"time/{part}_frac"] = frac
        self.busy = dict.fromkeys(LOOP_PARTS, 0.0)
        metrics["mem/rss_mb"], metrics["mem/peak_rss_mb"] = resident_mb()
        self._record(metrics)
        self.last_log = now

    def _record(self, metrics: Mapping[str, Any]) -> None:
        """Write one metrics record at the current env step."""
        self.logger.write(self.state.env_steps, metrics)

    def _evaluate_episodes(self, seeds: list[int]) -> EvalResult:
        """One episode on each of ``seeds`` in ``config.task``, as ``run`` says to evaluate."""
        return evaluate_as_run_says(
            self.agent,
            functools.partial(self.make_env, self.config, None, "eval"),
            seeds,
            self.config.run,
            record_steps=self.hooks.record_steps,
            check=self.interrupt.check,
        )

    def _after_eval(self, result: EvalResult, extra: Mapping[str, Any]) -> None:
        """Run ``hooks.after_eval`` and log what each returns, with ``extra``."""
        step = self.state.env_steps
        for metrics in self.hooks.after_evaluation(self.agent, result, step, self.bar.note, self.out):
            self._record({**metrics, **extra})

    def run(self) -> LoopState:
        """Run the loop, then log and checkpoint; on an interrupt, checkpoint before
        leaving; a full disk ends the run with one message naming what was kept."""
        try:
            self._loop()
            if self._unlogged():
                self.log(time.time())
            self.save()
        except KeyboardInterrupt:
            self.bar.note("interrupted: saving a checkpoint before exiting")
            self.save()
            raise
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise RunError(disk_full_message(self.run_dir, e, latest_checkpoint(self.run_dir))) from None
        finally:
            self.bar.close()
            self._close_logger()
        self._summary()
        return self.state

    def _close_logger(self) -> None:
        """Close the logger; on a full disk its last flush fails too, and the run's one
        message about that is already on its way."""
        try:
            self.logger.close()
        except OSError as e:
            if not is_disk_full(e):
                raise

    def _summary(self) -> None:
        out = self.out
        print(self._done_line(), file=out)
        split = time_split(self.busy_session, time.time() - self.session_start)
        parts = ", ".join(
            f"{part} {100 * frac:.0f}%{self.PART_NOTES.get(part, '')}"
            for part, frac in split.items()
            if part not in self.PARTS_NOT_SHOWN
        )
        print(f"Wall time of this session: {parts}.", file=out)
        run = RunDir(self.run_dir)
        print(f"Logs: {run.metrics} (TensorBoard: {run.tensorboard})", file=out)
        print(f"Checkpoint: {latest_checkpoint(self.run_dir)}", file=out)
