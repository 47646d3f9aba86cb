"""``compare.html``: the page of a comparison, from ``compare.json`` (:mod:`dreamrl.compare.summary`).

Like ``dreamrl report``'s page it is one self-contained file (the same CSS, plots
embedded, no JavaScript). It shows, per agent: evaluation return against env steps with
bootstrap bands over seeds; the steps-to-threshold table (the lesson's worked example);
final mean and IQM with intervals; wall time and FLOPs per env step; open-loop errors
against horizon per world model; the fantasy gap; what each agent's runs were warned
about at their start; and every run it was made from.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dreamrl.report.html import CSS, _absent, _plot, _table, esc, horizon_panels


def _num(value: Any, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def _steps(value: Any) -> str:
    return f"{value:,}" if isinstance(value, (int, float)) else "not reached"


def _interval(ci: Sequence[Any] | None, fmt: Any = _num) -> str:
    if not ci:
        return ""
    return f'<br><span class="ci">[{esc(fmt(ci[0]))}, {esc(fmt(ci[1]))}]</span>'


def _curves(agents: Mapping[str, Any], threshold: float | None) -> str:
    from dreamrl.report import plots

    series = []
    for i, (name, a) in enumerate(agents.items()):
        c = a.get("curve")
        if not c:
            continue
        nan = [math.nan if v is None else v for v in c["mean"]]
        low = [math.nan if v is None else v for v in c["low"]]
        high = [math.nan if v is None else v for v in c["high"]]
        color = plots.COLORS[i % len(plots.COLORS)]
        series.append(plots.Series(name, c["steps"], nan, None, color, low, high))
    if not series:
        return _absent("No evaluation records (eval/return) in any run's metrics.jsonl.")
    if threshold is not None:
        xs = [x for s in series for x in s.x]
        series.append(
            plots.Series(f"threshold {threshold:g}", [min(xs), max(xs)], [threshold] * 2, None, "#999999")
        )
    png = plots.line_plot(series, "Evaluation return against env steps", "env steps", "return")
    return _plot(
        png, "Mean evaluation return over seeds; the shaded band is a 95% bootstrap interval of that mean."
    )


def _threshold(agents: Mapping[str, Any], threshold: float | None) -> str:
    if threshold is None:
        return _absent("No threshold: pass --threshold to count env steps to a return.")
    rows = []
    for name, a in agents.items():
        t = a.get("threshold")
        if not t:
            continue
        per_seed = ", ".join(_steps(s) for s in t["per_seed"])
        rows.append(
            [
                esc(name),
                f"{t['reached']} of {t['seeds']}",
                esc(_steps(t["median"])) + _interval(t["ci"], _steps),
                esc(per_seed),
            ]
        )
    note = (
        f"<p>Env steps until the evaluation return first reached {threshold:g}. The median is over "
        "seeds, a seed that never reached it counting as never (so the median is a number only when "
        "half of the seeds or more reached it); brackets are a 95% bootstrap interval of the median "
        "over seeds.</p>"
    )
    return note + _table(["agent", "seeds that reached it", "median env steps", "per seed"], rows)


def _final(agents: Mapping[str, Any]) -> str:
    rows = []
    for name, a in agents.items():
        f = a.get("final")
        if not f:
            rows.append([esc(name), "0", "—", "—", "—"])
            continue
        rows.append(
            [
                esc(name),
                str(f["runs"]),
                _num(f["mean"]) + _interval(f["mean_ci"]),
                _num(f["iqm"]) + _interval(f["iqm_ci"]),
                _num(f["median"]) + _interval(f["median_ci"]),
            ]
        )
    note = (
        "<p>Each seed's score is its newest evaluation (the deterministic policy on fresh seeds). "
        "Brackets: 95% stratified-bootstrap intervals over seeds (rliable's definitions; with fewer "
        "than 4 seeds the IQM trims nothing and equals the mean).</p>"
    )
    return note + _table(["agent", "seeds", "mean", "IQM", "median"], rows)


def _costs(agents: Mapping[str, Any], warnings: Sequence[str] = ()) -> str:
    rows = []
    for name, a in agents.items():
        c = a.get("cost", {})
        wall = c.get("wall_s_per_env_step")
        rows.append(
            [
                esc(name),
                _num(1000 * wall if wall is not None else None, ".1f"),
                _num(1 / wall if wall else None, ".1f"),
                _num(c.get("gflop_per_env_step"), ".3g")
                if c.get("gflop_per_env_step") is not None
                else "n/a",
                _num(c.get("gflop_per_update"), ".3g") if c.get("gflop_per_update") is not None else "—",
                esc(str(c.get("flop_source", "n/a"))),
            ]
        )
    note = (
        "<p>Wall time over env steps of whole runs (evaluation and saving included), mean over seeds; "
        "FLOPs per env step are one update's (forward and backward) times the updates per env step, "
        "plus one policy step.</p>"
    )
    machines = sorted({m for a in agents.values() for m in a.get("cost", {}).get("machines", [])})
    if machines:
        note += "<p>Machines the runs trained on: " + "; ".join(esc(m) for m in machines) + ".</p>"
    note += "".join(_absent(f"Warning: {w}.") for w in warnings)
    head = [
        "agent",
        "wall ms per env step",
        "env steps/s",
        "GFLOP per env step",
        "GFLOP per update",
        "FLOPs from",
    ]
    return note + _table(head, rows)


def _openloop(agents: Mapping[str, Any]) -> str:
    from dreamrl.report import plots

    diagnoses = [
        (f"{name} ({a.get('world_model', '?')})", a["openloop"])
        for name, a in agents.items()
        if a.get("openloop")
    ]
    if not diagnoses:
        return _absent("No diagnostics in any run (run.diagnose=true writes them after each evaluation).")
    png = plots.panel_plot(horizon_panels(diagnoses), "horizon (steps ahead)", columns=3)
    return _plot(
        png, "Open-loop prediction errors against horizon, each the mean over the seeds' newest diagnostics"
    )


def _fantasy(agents: Mapping[str, Any]) -> str:
    from dreamrl.report import plots

    gaps = {name: a["fantasy_gap"] for name, a in agents.items() if a.get("fantasy_gap")}
    if not gaps:
        return _absent("No fantasy gap in any run's diagnostics.")
    rows = []
    for name, g in gaps.items():
        cells = ", ".join(
            f"H={h}: {_num(i, '.3g')} ({_num(d, '+.3g')})"
            for h, i, d in zip(g["horizons"], g["imagined"], g["gap"])
        )
        rows.append([esc(name), _num(g["real"], ".3g"), esc(cells), str(g.get("seeds", "—"))])
    series = [
        plots.Series(name, g["horizons"], g["gap"], None, plots.COLORS[i % len(plots.COLORS)])
        for i, (name, g) in enumerate(gaps.items())
    ]
    png = plots.line_plot(
        series, "Fantasy gap against horizon", "imagination horizon H", "imagined − real return"
    )
    note = (
        "<p>At states of real evaluation episodes: the λ-return the agent's model promises for its "
        "policy (H steps imagined, then the critic) against the discounted return that really followed. "
        "Positive: the model promises more than the world gives. Mean over seeds.</p>"
    )
    head = ["agent", "real return", "imagined return (gap) per horizon", "seeds"]
    return note + _table(head, rows) + _plot(png, "Fantasy gap (imagined minus real return) against horizon")


def _runs(agents: Mapping[str, Any]) -> str:
    rows = []
    for name, a in agents.items():
        for r in a["runs"]:
            rows.append(
                [
                    esc(name),
                    str(r["seed"]),
                    f"<code>{esc(r['run_dir'])}</code>",
                    f"{r['env_steps']:,}",
                    _num(r["final"]),
                    esc(_steps(r["steps_to_threshold"])) if "threshold" in a else "—",
                ]
            )
    return _table(["agent", "seed", "run dir", "env steps", "final return", "steps to threshold"], rows)


def _warnings(agents: Mapping[str, Any]) -> str:
    rows = [[esc(name), esc(w)] for name, a in agents.items() for w in a.get("warnings", [])]
    if not rows:
        return _absent("No run was warned about at its start.")
    note = (
        "<p>What <code>dreamrl train</code> warned about at the start of these runs: a mistake "
        "preset's knob, or a baseline's setting that the run is too short for.</p>"
    )
    return note + _table(["agent", "warning"], rows)


def build_compare_page(summary: Mapping[str, Any]) -> str:
    """The page's HTML for ``compare.json``'s content."""
    from dreamrl import __version__

    agents = summary["agents"]
    threshold = summary.get("threshold")
    task = summary["task"] if isinstance(summary["task"], str) else ", ".join(summary["task"])
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sections = [
        ("curves", "Return against env steps", _curves(agents, threshold)),
        ("threshold", "Steps to threshold", _threshold(agents, threshold)),
        ("final", "Final return", _final(agents)),
        ("cost", "Cost per env step", _costs(agents, summary.get("wall_time_warnings", []))),
        ("openloop", "Open-loop error against horizon", _openloop(agents)),
        ("fantasy", "Fantasy gap", _fantasy(agents)),
        ("warnings", "Settings warned about", _warnings(agents)),
        ("runs", "Runs", _runs(agents)),
    ]
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{k}"><h2>{esc(t)}</h2>{c}</section>' for k, t, c in sections)
    title = f"dreamrl compare: {task}"
    intro = (
        f"<p>{len(agents)} agents on {esc(task)}: {esc(', '.join(agents))}. Written {esc(now)} by dreamrl "
        f"{esc(__version__)}; intervals are {summary['confidence']:.0%} bootstrap intervals over seeds "
        f"({summary['reps']} replicates). The numbers are in <code>compare.json</code> beside this page.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{intro}<nav>{nav}</nav>{body}</body></html>\n"
    )
