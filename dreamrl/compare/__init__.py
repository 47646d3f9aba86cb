"""Comparisons: agents x seeds on one env, trained into one compare dir, summarised with
bootstrap intervals into ``compare.json`` and ``compare.html`` (docs/compare.md).

:func:`compare` plans the runs (:mod:`.runs`), trains those not done, and writes the
summary (:mod:`.summary`, :mod:`.stats`, :mod:`.costs`) and the page
(:mod:`dreamrl.report.compare`); :func:`compare_logdirs` summarises existing run dirs,
grouped by agent from their configs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from dreamrl.compare import stats
from dreamrl.compare.runs import (
    Outcome,
    RunSpec,
    Trainer,
    agent_of,
    plan,
    read_config,
    run_all,
    train_in_process,
)
from dreamrl.compare.summary import RunEntry, summarize
from dreamrl.compare.thresholds import default_threshold
from dreamrl.config import ConfigError
from dreamrl.rundir import RunDir

JSON_NAME = "compare.json"
PAGE_NAME = "compare.html"

__all__ = [
    "JSON_NAME",
    "PAGE_NAME",
    "compare",
    "compare_logdirs",
    "default_threshold",
    "describe",
    "plan",
    "write_outputs",
]


def resolve_threshold(threshold: float | None, task: str) -> float:
    """``threshold``, or the task's default; ConfigError naming ``--threshold`` if neither."""
    if threshold is not None:
        return threshold
    found = default_threshold(task)
    if found is None:
        raise ConfigError(f"--threshold: {task} has no default threshold return; give one (--threshold R)")
    return found


def compare(
    out: Path,
    env: str,
    agents: Sequence[str],
    seeds: int,
    steps: int | None,
    presets: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    threshold: float | None = None,
    parallel: int = 1,
    threads: int = 0,
    progress: bool = True,
    reps: int = stats.REPS,
    stdout: TextIO | None = None,
    train: Trainer = train_in_process,
    order: str = "agents",
) -> dict[str, Any]:
    """Train every agent x seed not yet done under ``out`` and write the comparison there;
    returns ``compare.json``'s content. Rerunning it resumes what is unfinished.

    The comparison is written again whenever a run ends and when it is interrupted, so a
    comparison of hours that stops halfway leaves the table of the runs it has. Progress
    goes to ``stdout`` (``sys.stdout`` as it is at the call)."""
    stdout = stdout or sys.stdout
    threshold = resolve_threshold(threshold, env)
    specs = plan(out, env, agents, seeds, steps, presets, overrides, order)
    plan_info = {
        "agents": list(agents),
        "seeds": seeds,
        "steps": specs[0].config.run.steps,
        "presets": list(presets),
        "overrides": dict(overrides or {}),
        "order": order,
    }

    flops = _counted_once()

    def write(outcome: Outcome) -> dict[str, Any]:
        summary = summarize(_groups(specs), threshold, reps, flops)
        summary["plan"] = plan_info
        summary["failed"] = [{"agent": s.agent, "seed": s.seed, "reason": why} for s, why in outcome.failed]
        write_outputs(out, summary)
        return summary

    def started() -> bool:
        return any(RunDir(s.run_dir).config.is_file() for s in specs)

    so_far = [Outcome([], [])]

    def write_if_started(outcome: Outcome) -> None:
        so_far[0] = outcome
        if started():  # a run that failed before writing its dir leaves nothing to show yet
            write(outcome)

    try:
        outcome = run_all(specs, stdout, parallel, threads, progress, train, after_each=write_if_started)
    except KeyboardInterrupt:
        if started():
            write(so_far[0])
            print(f"interrupted: {out / JSON_NAME} holds the runs so far", file=stdout, flush=True)
        raise
    return write(outcome)


def _counted_once() -> Callable[[Path], dict[str, float]]:
    """:func:`~dreamrl.compare.costs.counted_gflop`, counted once per run dir: a run's
    FLOPs follow from its config, which resuming never changes, and counting them costs
    an update under the counter for every agent each time the comparison is written."""
    from dreamrl.compare.costs import counted_gflop

    seen: dict[Path, dict[str, float]] = {}

    def flops(run_dir: Path) -> dict[str, float]:
        if run_dir not in seen:
            seen[run_dir] = counted_gflop(run_dir)  # a failure is not remembered: asked again
        return seen[run_dir]

    return flops


def _groups(specs: Sequence[RunSpec]) -> dict[str, list[RunEntry]]:
    """The runs that exist, by agent (a run that never started is left out)."""
    groups: dict[str, list[RunEntry]] = {}
    for s in specs:
        if (s.run_dir / "config.json").is_file():
            groups.setdefault(s.agent, []).append(
                RunEntry(s.agent, s.seed, s.run_dir, read_config(s.run_dir))
            )
    if not groups:
        raise ConfigError("no run of the comparison has started: nothing to summarise")
    return groups


def compare_logdirs(
    logdirs: Sequence[Path], out: Path, threshold: float | None = None, reps: int = stats.REPS
) -> dict[str, Any]:
    """Summarise existing run dirs, grouped by agent (:func:`~dreamrl.compare.runs.agent_of`
    of each config), into ``out``; every run must be of one task."""
    groups: dict[str, list[RunEntry]] = {}
    for path in logdirs:
        config = read_config(path)
        groups.setdefault(agent_of(config), []).append(RunEntry(agent_of(config), config.seed, path, config))
    if not groups:
        raise ConfigError("--logdirs: no run dirs given")
    tasks = sorted({e.config.task for runs in groups.values() for e in runs})
    if len(tasks) > 1:
        raise ConfigError(
            f"--logdirs: the runs are of different tasks ({', '.join(tasks)}); compare one task"
        )
    summary = summarize(groups, resolve_threshold(threshold, tasks[0]), reps)
    write_outputs(out, summary)
    return summary


def write_outputs(out: Path, summary: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``compare.json`` and ``compare.html`` into ``out`` (each whole or not at all)."""
    from dreamrl.report.compare import build_compare_page
    from dreamrl.run.disk import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    json_path, page_path = out / JSON_NAME, out / PAGE_NAME
    write_atomic(json_path, json.dumps(summary, indent=1))
    write_atomic(page_path, build_compare_page(summary))
    return json_path, page_path


def describe(summary: Mapping[str, Any]) -> list[str]:
    """One line per agent for the terminal: seeds reaching the threshold, the median steps
    to it, the final mean and IQM with their intervals, the cost per env step."""

    def num(v: Any, spec: str = ".1f") -> str:
        return format(v, spec) if isinstance(v, (int, float)) else "—"

    def steps(v: Any) -> str:
        return f"{v:,}" if isinstance(v, (int, float)) else "never"

    lines = [f"{summary['task']}: threshold {summary['threshold']}"]
    for name, a in summary["agents"].items():
        t, f, c = a.get("threshold"), a.get("final"), a.get("cost", {})
        parts = [f"{name:<14}"]
        if t:
            parts.append(
                f"reached {t['reached']}/{t['seeds']}, median {steps(t['median'])} steps "
                f"[{steps(t['ci'][0])}, {steps(t['ci'][1])}]"
            )
        if f:
            parts.append(
                f"final mean {num(f['mean'])} [{num(f['mean_ci'][0])}, {num(f['mean_ci'][1])}], "
                f"IQM {num(f['iqm'])} [{num(f['iqm_ci'][0])}, {num(f['iqm_ci'][1])}]"
            )
        wall = c.get("wall_s_per_env_step")
        parts.append(f"{num(1000 * wall if wall else None)} ms/env step")
        gflop = c.get("gflop_per_env_step")
        parts.append(f"{num(gflop, '.3g')} GFLOP/env step" if gflop is not None else "FLOPs n/a")
        gap = a.get("fantasy_gap")
        if gap:
            parts.append(f"fantasy gap H={gap['horizons'][-1]} {gap['gap'][-1]:+.3g}")
        lines.append("  ".join(parts))
    for name, a in summary["agents"].items():
        lines.extend(f"warning: {name}: {w}" for w in a.get("warnings", []))
    lines.extend(f"warning: {w}" for w in summary.get("wall_time_warnings", []))
    return lines
