"""From run dirs grouped by agent to ``compare.json``: every figure of a comparison.

Per agent, over its seeds (see :mod:`.stats` for the statistics):

- ``curve``: evaluation return (``eval/return`` in ``metrics.jsonl``) against env steps,
  the mean over seeds with a 95% bootstrap band;
- ``threshold``: steps to the threshold return, median over seeds with its interval and
  how many seeds reached it;
- ``final``: each seed's newest evaluation (``dreamrl eval``'s file or the last
  ``eval/return``, as ``dreamrl report`` picks it) as that seed's score; their mean, IQM
  and median with stratified-bootstrap intervals (:func:`dreamrl.run.aggregate.aggregate`);
- ``cost``: wall seconds and GFLOPs per env step (:mod:`.costs`), and the machines the
  runs' sessions ran on (:mod:`dreamrl.run.machine`); ``wall_time_warnings`` says where
  those make wall times unfit to compare;
- ``warnings``: what ``dreamrl train`` warned about at the start of its runs
  (:func:`dreamrl.config.warnings_for`): a mistake preset's knob, a baseline's setting that
  the run is too short for;
- ``openloop``: the open-loop errors against horizon of each seed's newest diagnostics,
  averaged over seeds, and the world model they come from;
- ``fantasy_gap``: the same for the fantasy gap (:mod:`dreamrl.diagnostics.fantasy`).

Nothing missing is an error: an agent without evaluations has no curve, one without
diagnostics no open-loop errors, and the page says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamrl.agents import learns_world_model
from dreamrl.compare import costs, stats
from dreamrl.config import Config, warnings_for
from dreamrl.run import aggregate, machine
from dreamrl.rundir import RunDir

FORMAT = 1
HORIZON_KEYS = ("reward_error", "continue_error", "kl", "drift")


@dataclass(frozen=True)
class RunEntry:
    """One run of a comparison: its agent, seed, dir and config."""

    agent: str
    seed: int
    run_dir: Path
    config: Config


def _finite(value: Any) -> float | None:
    """A float for JSON: None for NaN and infinities."""
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _list(values: Any) -> list[float | None]:
    return [_finite(v) for v in np.asarray(values, np.float64).tolist()]


def eval_curve(records: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """A run's ``eval/return`` records as ``(env steps, returns)``."""
    rows = [
        r
        for r in records
        if isinstance(r.get("eval/return"), (int, float)) and isinstance(r.get("step"), int)
    ]
    return [int(r["step"]) for r in rows], [float(r["eval/return"]) for r in rows]


def mean_curves(dicts: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """The element-wise mean over diagnoses ``dicts`` of each curve under ``keys`` and of
    each in ``obs_error`` (over the dicts holding it at the first one's length), in the
    diagnoses' own layout: ``{key: [H], "obs_error": {obs key: [H]}}``."""

    def mean(lists: list[Any]) -> list[float]:
        rows = [[math.nan if v is None else float(v) for v in x] for x in lists if isinstance(x, list) and x]
        rows = [r for r in rows if rows and len(r) == len(rows[0])]
        if not rows or not np.isfinite(np.asarray(rows)).any():
            return []
        return np.nanmean(np.asarray(rows, np.float64), axis=0).tolist()  # type: ignore[no-any-return]

    out: dict[str, Any] = {}
    for key in keys:
        if curve := mean([d.get(key) for d in dicts]):
            out[key] = curve
    obs_keys = sorted({k for d in dicts if isinstance(d.get("obs_error"), dict) for k in d["obs_error"]})
    obs = {k: c for k in obs_keys if (c := mean([(d.get("obs_error") or {}).get(k) for d in dicts]))}
    if obs:
        out["obs_error"] = obs
    out["probe"] = any(bool(d.get("probe")) for d in dicts)
    return out


def newest_diagnosis(run_dir: Path) -> dict[str, Any] | None:
    """A run's newest ``diagnostics/diagnose-*.json`` (by the step inside), if any."""
    from dreamrl.report.html import _newest_json

    folder = RunDir(run_dir).diagnostics
    found = _newest_json(folder, []) if folder.is_dir() else None
    return found[1] if found else None


def mean_fantasy_gap(gaps: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The seeds' fantasy gaps averaged (those with the first's horizons), with the count."""
    if not gaps:
        return None
    horizons = gaps[0]["horizons"]
    same = [g for g in gaps if g.get("horizons") == horizons]
    return {
        "horizons": horizons,
        "imagined": np.mean([g["imagined"] for g in same], axis=0).tolist(),
        "real": float(np.mean([g["real"] for g in same])),
        "gap": np.mean([g["gap"] for g in same], axis=0).tolist(),
        "abs_gap": np.mean([g.get("abs_gap", g["gap"]) for g in same], axis=0).tolist(),
        "seeds": len(same),
    }


def summarize_agent(
    runs: Sequence[RunEntry],
    threshold: float | None,
    reps: int = stats.REPS,
    flops: Callable[[Path], dict[str, float]] | None = costs.counted_gflop,
) -> dict[str, Any]:
    """Every figure of one agent over its runs (see the module docstring)."""
    from dreamrl.report.html import _read_records, latest_eval

    per_run: list[dict[str, Any]] = []
    curves: list[tuple[list[int], list[float]]] = []
    finals: list[float] = []
    walls: list[float] = []
    diagnoses: list[dict[str, Any]] = []
    logged_flops: list[float] = []
    for run in runs:
        problems: list[str] = []
        records = _read_records(RunDir(run.run_dir).metrics, problems)
        steps, returns = eval_curve(records)
        evaluation = latest_eval(run.run_dir, records, problems)
        final = evaluation.mean if evaluation is not None else math.nan
        reached = stats.steps_to_threshold(steps, returns, threshold) if threshold is not None else None
        wall = costs.wall_seconds_per_env_step(records)
        sessions = machine.read_sessions(run.run_dir)
        last = max((int(r["step"]) for r in records if isinstance(r.get("step"), int)), default=0)
        if steps:
            curves.append((steps, returns))
        if math.isfinite(final):
            finals.append(final)
        if math.isfinite(wall):
            walls.append(wall)
        if (g := costs.logged_gflop(records)) is not None:
            logged_flops.append(g)
        if (d := newest_diagnosis(run.run_dir)) is not None:
            diagnoses.append(d)
        per_run.append(
            {
                "seed": run.seed,
                "run_dir": str(run.run_dir),
                "env_steps": last,
                "final": _finite(final),
                "steps_to_threshold": reached,
                "wall_s_per_env_step": _finite(wall),
                "machines": machine.machine_labels(sessions),
                "sessions": len(sessions),
                "crowded_sessions": machine.crowded_sessions(sessions),
                "problems": problems,
            }
        )
    config = runs[0].config
    out: dict[str, Any] = {
        "kind": config.agent.kind,
        "world_model": config.agent.wm if learns_world_model(config.agent.kind) else None,
        "presets": list(config.presets),
        "warnings": _union(warnings_for(r.config) for r in runs),
        "runs": per_run,
    }
    if curves:
        band = stats.curve_band(curves, reps)
        out["curve"] = {
            "steps": band.steps.astype(int).tolist(),
            "mean": _list(band.mean),
            "low": _list(band.low),
            "high": _list(band.high),
            "seeds": band.seeds.tolist(),
        }
    if threshold is not None:
        out["threshold"] = stats.threshold_summary([r["steps_to_threshold"] for r in per_run], reps)
    if finals:
        out["final"] = aggregate.aggregate(finals, reps=reps, confidence=stats.CONFIDENCE)
    out["cost"] = _cost(runs, walls, logged_flops, flops)
    out["cost"]["machines"] = _union(r["machines"] for r in per_run)
    if diagnoses:
        out["openloop"] = mean_curves(diagnoses, HORIZON_KEYS)
        out["openloop_seeds"] = len(diagnoses)
        gap = mean_fantasy_gap([d["fantasy_gap"] for d in diagnoses if d.get("fantasy_gap")])
        if gap is not None:
            out["fantasy_gap"] = gap
    return out


def _cost(
    runs: Sequence[RunEntry],
    walls: Sequence[float],
    logged: Sequence[float],
    flops: Callable[[Path], dict[str, float]] | None,
) -> dict[str, Any]:
    """Wall seconds per env step (mean over seeds) and GFLOPs per env step: logged by the
    runs, else counted on the first run's checkpoint where the agent allows, else None."""
    cost: dict[str, Any] = {"wall_s_per_env_step": _finite(np.mean(walls)) if walls else None}
    cost["gflop_per_env_step"] = float(np.mean(logged)) if logged else None
    cost["flop_source"] = "logged by the runs" if logged else "n/a"
    if not logged and flops is not None and costs.trains_in_dreamrl_loop(runs[0].config):
        from dreamrl.run.checkpoint import latest_checkpoint

        with_ckpt = next((r for r in runs if latest_checkpoint(r.run_dir) is not None), None)
        if with_ckpt is not None:
            counted = flops(with_ckpt.run_dir)
            cost.update(counted)
            cost["flop_source"] = f"torch's FLOP counter on {with_ckpt.run_dir.name}'s checkpoint"
    return cost


def _union(lists: Iterable[Sequence[str]]) -> list[str]:
    """The distinct items of ``lists``, in the order they first come."""
    seen: list[str] = []
    for items in lists:
        seen.extend(item for item in items if item not in seen)
    return seen


def wall_time_warnings(agents: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What makes the agents' wall times unfit to set side by side: runs on more than one
    kind of machine, a run whose sessions ran on several, sessions that began with the
    machine busier than its cores. None when every run recorded one machine, idle."""
    runs = [(name, r) for name, a in agents.items() for r in a.get("runs", [])]
    kinds = _union(r.get("machines", []) for _, r in runs)
    warnings = []
    if len(kinds) > 1:
        warnings.append(f"wall times come from {len(kinds)} kinds of machine: " + "; ".join(kinds))
    spanning = [f"{name} seed {r['seed']}" for name, r in runs if len(r.get("machines", [])) > 1]
    if spanning:
        warnings.append("resumed on another kind of machine: " + ", ".join(spanning))
    crowded = [f"{name} seed {r['seed']}" for name, r in runs if r.get("crowded_sessions")]
    if crowded:
        warnings.append(
            "began with the machine busier than its cores (other work shared it): " + ", ".join(crowded)
        )
    unknown = [f"{name} seed {r['seed']}" for name, r in runs if not r.get("sessions")]
    if unknown and kinds:
        warnings.append("recorded no machine (older runs): " + ", ".join(unknown))
    return warnings


def summarize(
    groups: Mapping[str, Sequence[RunEntry]],
    threshold: float | None,
    reps: int = stats.REPS,
    flops: Callable[[Path], dict[str, float]] | None = costs.counted_gflop,
) -> dict[str, Any]:
    """``compare.json``'s content for runs grouped by agent (every run on one task)."""
    tasks = sorted({r.config.task for runs in groups.values() for r in runs})
    agents = {agent: summarize_agent(runs, threshold, reps, flops) for agent, runs in groups.items()}
    return {
        "format": FORMAT,
        "task": tasks[0] if len(tasks) == 1 else tasks,
        "threshold": threshold,
        "confidence": stats.CONFIDENCE,
        "reps": reps,
        "agents": agents,
        "wall_time_warnings": wall_time_warnings(agents),
    }
