"""``dreamrl report``: one self-contained HTML page about one or more run dirs.

The page is a single file a person can mail, archive or open offline: CSS inline, no
JavaScript, no external URL, every plot and image embedded as a ``data:`` URI. It holds

1. learning curves: episode score and evaluation return (mean ± std) against env steps,
   one line per run dir, and the loss terms of ``metrics.jsonl``;
2. an evaluation table: per run dir its newest evaluation (``eval/eval-<steps>.json``
   written by ``dreamrl eval``, or the last ``eval/*`` record of ``metrics.jsonl`` if that
   is newer) with mean, median and IQM over episodes and their bootstrap CIs, and, for
   run dirs that share a task (``config.json``'s ``task``), an aggregate row over them;
3. world-model diagnostics: each run dir's newest ``diagnostics/*.json`` (horizon curves,
   numbers, summary, open-loop images);
4. counterfactuals: each ``whatif/*.json`` (returns, rewards, image);
5. speed and memory: env steps and updates per second, peak resident memory, and where
   the loop's wall time went (training, waiting for envs, acting, evaluating, saving).

A section whose files are missing says so in one line; nothing missing is an error. The
JSON layouts read here are documented in the README ("Evaluation and reports").
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dreamrl.agents import learns_world_model
from dreamrl.run import aggregate
from dreamrl.run.logging import LOOP_PARTS, loop_seconds
from dreamrl.rundir import EVAL_RESULT, RunDir

# The loss terms shown first, in this order; other loss/* keys (reconstruction, one per
# observation key, and any later term) follow. loss/total mixes scales and is left out.
MAIN_LOSSES = ("dyn", "rep", "rew", "con", "policy", "value")
HIDDEN_LOSSES = ("total",)
HORIZON_CURVES = ("reward_error", "continue_error", "kl", "drift")
IMAGE_TYPES = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
MAX_IMAGE_BYTES = 25 * 2**20  # keeps the page openable; larger files are named, not embedded
SMALL_IMAGE = 480  # pixels: narrower images from diagnostics are shown enlarged
MAX_WHATIFS = 12  # newest first, per run dir
CONFIDENCE = 0.95
esc = html.escape


@dataclass
class EvalEntry:
    """One evaluation of one run dir: where it came from and its episode returns."""

    source: str
    env_steps: int | None
    mean: float
    std: float
    returns: list[float] = field(default_factory=list)


@dataclass
class Run:
    """What the report reads from one run dir."""

    path: Path
    label: str
    config: dict[str, Any]
    records: list[dict[str, Any]]
    evaluation: EvalEntry | None
    problems: list[str] = field(default_factory=list)  # files that could not be read

    @property
    def task(self) -> str:
        return str(self.config.get("task", "?"))

    @property
    def kind(self) -> str:
        """``agent.kind`` of the run (runs from before the setting were DreamerV3's)."""
        agent = self.config.get("agent")
        return str(agent.get("kind", "dreamer")) if isinstance(agent, dict) else "dreamer"

    @property
    def has_world_model(self) -> bool:
        """Whether the run learned a world model: a model-free baseline did not."""
        return learns_world_model(self.kind)

    @property
    def world_model(self) -> str:
        """``agent.wm`` of the run (runs from before the setting used the RSSM); ``none``
        and the kind for a model-free baseline."""
        if not self.has_world_model:
            return f"none ({self.kind})"
        agent = self.config.get("agent")
        return str(agent.get("wm", "rssm")) if isinstance(agent, dict) else "rssm"

    @property
    def last_step(self) -> int | None:
        steps = [r["step"] for r in self.records if isinstance(r.get("step"), int)]
        return max(steps) if steps else None


# ---------------------------------------------------------------------------- reading


def _read_json(path: Path, problems: list[str]) -> Any:
    """A JSON file's content, or None with the reason appended to ``problems``."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path}: {e}")
        return None


def _read_records(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a torn last line (a run killed mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"{path}: line {i + 1} is not JSON (skipped)")
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _floats(values: Any) -> list[float]:
    """A JSON list of numbers as floats; null (a non-finite value) becomes NaN."""
    if not isinstance(values, list):
        return []
    return [float(v) if isinstance(v, (int, float)) else math.nan for v in values]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def latest_eval(run_dir: Path, records: Sequence[dict[str, Any]], problems: list[str]) -> EvalEntry | None:
    """The newest evaluation: ``eval/eval-<steps>.json``, or metrics.jsonl's last eval record
    when it is at more env steps (a file wins a tie: it usually has more episodes)."""
    best: EvalEntry | None = None
    files = sorted(
        (int(m.group(1)), p)
        for p in RunDir(run_dir).evals.glob("eval-*.json")
        if (m := EVAL_RESULT.fullmatch(p.name))
    )
    for steps, path in reversed(files):
        data = _read_json(path, problems)
        if isinstance(data, dict):
            returns = _floats(data.get("returns"))
            best = EvalEntry(
                source=f"eval/{path.name}",
                env_steps=steps,
                mean=_number(data.get("mean_return", np.mean(returns) if returns else math.nan)),
                std=_number(data.get("std_return", np.std(returns) if returns else math.nan)),
                returns=returns,
            )
            break
    last = next((r for r in reversed(records) if r.get("eval/return") is not None), None)
    if last is not None and (best is None or (best.env_steps or 0) < int(last["step"])):
        best = EvalEntry(
            source=f"metrics.jsonl (step {last['step']})",
            env_steps=int(last["step"]),
            mean=_number(last.get("eval/return")),
            std=_number(last.get("eval/return_std")),
            returns=_floats(last.get("eval/returns")),
        )
    return best


def _labels(paths: Sequence[Path]) -> list[str]:
    """Short, distinct names for run dirs: the folder name, with its parent if needed."""
    labels = [p.resolve().name or str(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{i + 1}: {label}" for i, label in enumerate(labels)]
    return labels


def load_runs(run_dirs: Sequence[Path]) -> list[Run]:
    """Read every run dir's config, metrics and newest evaluation."""
    runs = []
    for path, label in zip(run_dirs, _labels(run_dirs)):
        problems: list[str] = []
        files = RunDir(path)
        config = _read_json(files.config, problems) if files.config.is_file() else None
        records = _read_records(files.metrics, problems)
        evaluation = latest_eval(path, records, problems)
        runs.append(
            Run(path, label, config if isinstance(config, dict) else {}, records, evaluation, problems)
        )
    return runs


def _newest_json(folder: Path, problems: list[str]) -> tuple[Path, dict[str, Any]] | None:
    """The readable ``*.json`` in ``folder`` with the highest ``step`` (then newest file)."""
    found = []
    for path in folder.glob("*.json"):
        data = _read_json(path, problems)
        if isinstance(data, dict):
            step = data.get("step")
            found.append(((step if isinstance(step, int) else -1, path.stat().st_mtime), path, data))
    if not found:
        return None
    _, path, data = max(found, key=lambda item: item[0])
    return path, data


# ---------------------------------------------------------------------------- pieces


def _fmt(value: Any, spec: str = ".2f") -> str:
    number = _number(value)
    return "—" if math.isnan(number) else format(number, spec)


def _percent(fraction: float) -> str:
    return "—" if math.isnan(fraction) else f"{100 * fraction:.0f}%"


def _img(data: bytes, mime: str, alt: str, scale_small: bool = False) -> str:
    """An ``<img>`` with ``data`` inline. ``scale_small`` shows images narrower than
    ``SMALL_IMAGE`` pixels (a strip of 64x64 frames) enlarged by a whole factor, pixelated."""
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    size = ""
    if scale_small:
        try:
            from PIL import Image

            width, height = Image.open(io.BytesIO(data)).size
        except Exception:  # an image Pillow cannot read is still embedded, at its own size
            width = height = 0
        factor = min(4, SMALL_IMAGE // width) if 0 < width < SMALL_IMAGE else 1
        if factor > 1:
            size = f' width="{width * factor}" height="{height * factor}" class="pixelated"'
    return f'<img src="{uri}" alt="{esc(alt)}"{size}>'


def _plot(png: bytes, alt: str) -> str:
    return f"<figure>{_img(png, 'image/png', alt)}<figcaption>{esc(alt)}</figcaption></figure>"


def _embed_file(folder: Path, name: Any, caption: str) -> str:
    """A file named in a JSON beside it, embedded; only plain names in that folder count,
    so a JSON can never pull in a file from elsewhere on disk."""
    if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
        return _absent(f"{caption}: {name!r} is not a file name in {folder}.")
    path = folder / name
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        return _absent(f"{caption}: {name} is not a PNG, GIF or JPEG image.")
    if not path.is_file():
        return _absent(f"{caption}: {name} is absent from {folder}.")
    if path.stat().st_size > MAX_IMAGE_BYTES:
        return _absent(f"{caption}: {path} is too large to embed.")
    image = _img(path.read_bytes(), mime, caption, scale_small=True)
    return f"<figure>{image}<figcaption>{esc(caption)}</figcaption></figure>"


def _absent(text: str) -> str:
    return f'<p class="absent">{esc(text)}</p>'


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], css: str = "", marked: Iterable[int] = ()
) -> str:
    """An HTML table; cells are already HTML (escaped by the caller). Rows whose index is
    in ``marked`` are highlighted (aggregate rows)."""
    highlight = set(marked)
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        ('<tr class="agg">' if i in highlight else "<tr>") + "".join(f"<td>{c}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---------------------------------------------------------------------------- sections


def _intro(runs: Sequence[Run], now: str) -> str:
    from dreamrl import __version__

    rows = []
    for run in runs:
        metrics = RunDir(run.path).metrics
        written = (
            datetime.datetime.fromtimestamp(metrics.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M")
            if metrics.is_file()
            else "—"
        )
        rows.append(
            [
                esc(run.label),
                f"<code>{esc(str(run.path))}</code>",
                esc(run.task),
                esc(run.world_model),
                esc(str(run.config.get("seed", "—"))),
                esc(f"{run.last_step:,}" if run.last_step is not None else "—"),
                esc(written),
            ]
        )
    names = ", ".join(f"<code>{esc(str(r.path))}</code>" for r in runs)
    problems = [p for r in runs for p in r.problems]
    notes = "".join(f"<li>{esc(p)}</li>" for p in problems)
    return (
        f"<p>This page reports on {len(runs)} run dir{'s' if len(runs) != 1 else ''}: {names}. "
        f"Written {esc(now)} by dreamrl {esc(__version__)}. It is one file: every plot and image is "
        "embedded, and it needs neither JavaScript nor a network.</p>"
        + _table(
            ["run", "path", "task", "world model", "seed", "last logged env step", "metrics last written"],
            rows,
        )
        + (f"<p>Files that could not be read:</p><ul>{notes}</ul>" if notes else "")
    )


def curve_axis(runs: Sequence[Run]) -> tuple[str, str]:
    """(record key, axis label) the curves are drawn against: env steps, or updates when no
    run has taken an env step yet but their records count updates (offline training logs
    everything at env step 0, so env steps would pile every point on one x)."""
    offline = all((run.last_step or 0) == 0 for run in runs) and any(
        "train/updates" in r for run in runs for r in run.records
    )
    return ("train/updates", "updates") if offline else ("step", "env steps")


def _curves(runs: Sequence[Run]) -> str:
    from dreamrl.report import plots

    x_key, x_label = curve_axis(runs)

    def series(key: str, band: str | None = None) -> list[plots.Series]:
        out = []
        for i, run in enumerate(runs):
            rows = [
                r
                for r in run.records
                if math.isfinite(_number(r.get(key))) and math.isfinite(_number(r.get(x_key)))
            ]
            if not rows:
                continue
            x = [r[x_key] for r in rows]
            y = [_number(r[key]) for r in rows]
            b = [0.0 if math.isnan(s := _number(r.get(band))) else s for r in rows] if band else None
            out.append(plots.Series(run.label, x, y, b, plots.COLORS[i % len(plots.COLORS)]))
        return out

    parts = []
    scores, evals = series("episode/score"), series("eval/return", "eval/return_std")
    panels = {}
    if scores:
        panels["training episode score"] = scores
    if evals:
        panels["evaluation return (mean ± std)"] = evals
    if panels:
        png = plots.panel_plot(panels, x_label, columns=2, smoothed=False, panel_size=(5.6, 3.6))
        parts.append(_plot(png, f"Episode score and evaluation return against {x_label}"))
        if not scores:
            parts.append(_absent("No training episode has finished yet (no episode/score records)."))
        if not evals:
            parts.append(_absent("No evaluation records (eval/return) in metrics.jsonl."))
    else:
        parts.append(_absent("No episode scores or evaluation records in any metrics.jsonl."))
    keys = sorted({k for run in runs for r in run.records for k in r if k.startswith("loss/")})
    names = [k[5:] for k in keys if k[5:] not in HIDDEN_LOSSES]
    ordered = [n for n in MAIN_LOSSES if n in names] + [n for n in names if n not in MAIN_LOSSES]
    loss_panels = {f"loss/{n}": s for n in ordered if (s := series(f"loss/{n}"))}
    if loss_panels:
        png = plots.panel_plot(loss_panels, x_label, columns=4, smoothed=True)
        parts.append(
            _plot(
                png,
                f"Loss terms against {x_label} (unscaled; a moving average over the faint raw values). "
                "Reconstruction terms are named by observation key.",
            )
        )
    else:
        parts.append(_absent("No loss records (loss/*) in any metrics.jsonl: no update has been logged."))
    return "".join(parts)


def loop_summary(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Speed and memory of one run from its ``metrics.jsonl`` records: env steps and
    updates per wall second, wall minutes, peak resident MB, and the share of wall time spent in
    each part of the loop (``time/<part>_frac``, each log window weighted by its length
    from the ``time/elapsed`` clock). NaN for whatever the records do not hold."""
    nan = math.nan
    logged = [r for r in records if math.isfinite(_number(r.get("time/elapsed")))]
    elapsed = _number(logged[-1]["time/elapsed"]) if logged else nan
    steps = max((int(r["step"]) for r in records if isinstance(r.get("step"), int)), default=0)
    updates = max((_number(r.get("train/updates")) for r in records if "train/updates" in r), default=nan)
    peaks = [v for r in records if math.isfinite(v := _number(r.get("mem/peak_rss_mb")))]
    out = {
        "minutes": elapsed / 60,
        "env_steps_per_s": steps / elapsed if elapsed > 0 else nan,
        "updates_per_s": updates / elapsed if elapsed > 0 else nan,
        "peak_rss_mb": max(peaks, default=nan),
    }
    seconds = loop_seconds(records)
    for part in LOOP_PARTS:
        out[f"{part}_frac"] = seconds[part] / seconds["wall"] if seconds["wall"] > 0 else nan
    return out


def _speed(runs: Sequence[Run]) -> str:
    from dreamrl.run.machine import machine_labels, read_sessions

    rows = []
    for run in runs:
        s = loop_summary(run.records)
        shares = [_percent(s[f"{part}_frac"]) for part in LOOP_PARTS]
        machines = machine_labels(read_sessions(run.path))
        rows.append(
            [
                esc(run.label),
                _fmt(s["minutes"], ".1f"),
                _fmt(s["env_steps_per_s"], ".1f"),
                _fmt(s["updates_per_s"], ".3f"),
                _fmt(s["peak_rss_mb"], ",.0f"),
                *shares,
                esc("; ".join(machines)) if machines else "—",
            ]
        )
    if all(row[1] == "—" for row in rows):
        return _absent("No timing records (time/elapsed) in any metrics.jsonl.")
    head = ["run", "wall minutes", "env steps/s", "updates/s", "peak resident MB"]
    head += ["train", "waiting for envs", "acting", "evaluating", "saving", "machine"]
    return (
        "<p>Rates over the whole run (wall time includes evaluation and saving), and the share of "
        "wall time in each part of the loop, from the <code>time/*_frac</code> records. With env "
        "workers in processes, the envs step while the agent trains: waiting for envs is only the "
        "part of their time that training did not hide. The machine is what each training session "
        "recorded in <code>machines.jsonl</code> (several when the run resumed elsewhere).</p>"
        + _table(head, rows)
    )


def _stat_cell(value: float, ci: Sequence[float] | None) -> str:
    if ci is None:
        return _fmt(value)
    return f'{_fmt(value)}<br><span class="ci">[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>'


def _stats(scores: Sequence[float]) -> dict[str, Any] | None:
    finite = [s for s in scores if math.isfinite(s)]
    return aggregate.aggregate(finite, confidence=CONFIDENCE) if finite else None


def _evaluation(runs: Sequence[Run]) -> tuple[str, list[str]]:
    """The evaluation table's HTML, and one plain line per aggregate for the terminal."""
    rows: list[list[str]] = []
    marked: list[int] = []  # the aggregate rows
    lines: list[str] = []
    for run in runs:
        e = run.evaluation
        if e is None:
            rows.append([esc(run.label), esc(run.task), "—", "0", "—", "—", "—", "—", "no evaluation yet"])
            continue
        s = _stats(e.returns)
        rows.append(
            [
                esc(run.label),
                esc(run.task),
                esc(f"{e.env_steps:,}" if e.env_steps is not None else "—"),
                str(len(e.returns)) if e.returns else "—",
                _stat_cell(e.mean, s["mean_ci"] if s else None),
                _stat_cell(s["median"], s["median_ci"]) if s else "—",
                _stat_cell(s["iqm"], s["iqm_ci"]) if s else "—",
                _fmt(e.std),
                esc(e.source),
            ]
        )
    by_task: dict[str, list[Run]] = {}
    for run in runs:
        if run.evaluation is not None and math.isfinite(run.evaluation.mean):
            by_task.setdefault(run.task, []).append(run)
    for task, group in by_task.items():
        if len(group) < 2:
            continue
        scores = [r.evaluation.mean for r in group if r.evaluation is not None]
        s = aggregate.aggregate(scores, confidence=CONFIDENCE)
        steps = sorted({r.evaluation.env_steps for r in group if r.evaluation and r.evaluation.env_steps})
        span = f"{steps[0]:,}–{steps[-1]:,}" if len(steps) > 1 else (f"{steps[0]:,}" if steps else "—")
        marked.append(len(rows))
        rows.append(
            [
                esc(f"aggregate of {len(group)} run dirs"),
                esc(task),
                esc(span),
                f"{len(group)} runs",
                _stat_cell(s["mean"], s["mean_ci"]),
                _stat_cell(s["median"], s["median_ci"]),
                _stat_cell(s["iqm"], s["iqm_ci"]),
                _fmt(float(np.std(scores))),
                esc(", ".join(r.label for r in group)),
            ]
        )
        lines.append(
            f"{task}: over {len(group)} run dirs, IQM {s['iqm']:.2f} [{s['iqm_ci'][0]:.2f}, "
            f"{s['iqm_ci'][1]:.2f}], mean {s['mean']:.2f} [{s['mean_ci'][0]:.2f}, {s['mean_ci'][1]:.2f}]"
        )
    if all(r.evaluation is None for r in runs):
        return _absent(
            "No evaluation found: no eval/eval-*.json and no eval/* record in metrics.jsonl."
        ), lines
    header = ["run", "task", "env steps", "episodes", "mean", "median", "IQM", "std", "source"]
    note = (
        "<p>Per run dir: the deterministic policy's returns over fresh-seed evaluation episodes. "
        f"Brackets are {CONFIDENCE:.0%} stratified-bootstrap confidence intervals (2000 replicates, "
        "percentile method, rliable's definitions; IQM is the mean of the middle 50% of episodes). "
        "Aggregate rows treat each run dir's mean return as one run's score and resample runs. "
        "Scores of different tasks are not normalised, so no row aggregates across tasks.</p>"
    )
    return note + _table(header, rows, "eval", marked), lines


def horizon_panels(
    diagnoses: Sequence[tuple[str, dict[str, Any]]], first_color: int = 0
) -> dict[str, list[Any]]:
    """One panel per error against horizon, one series per ``(label, diagnosis)``: reward
    and continue error for every model, observation error per decoded key (a probe's
    marked), KL and drift for the latent models."""
    from dreamrl.report import plots

    panels: dict[str, list[plots.Series]] = {}
    for i, (label, d) in enumerate(diagnoses):
        color = plots.COLORS[(first_color + i) % len(plots.COLORS)]
        curves = {key: _floats(d.get(key)) for key in HORIZON_CURVES}
        obs = d.get("obs_error")
        if isinstance(obs, dict):
            for key, values in obs.items():
                curves[f"obs_error: {key}" + (" (probe)" if d.get("probe") else "")] = _floats(values)
        for name, y in curves.items():
            if y:
                panels.setdefault(name, []).append(
                    plots.Series(label, list(range(1, len(y) + 1)), y, None, color)
                )
    return panels


def _comparison(runs: Sequence[Run]) -> str:
    """The newest diagnosis of every run on shared axes (two runs or more)."""
    from dreamrl.report import plots

    diagnoses = []
    for run in runs:
        folder = RunDir(run.path).diagnostics
        found = _newest_json(folder, []) if folder.is_dir() else None
        if found is not None:
            diagnoses.append((f"{run.label} ({run.world_model})", found[1]))
    if len(diagnoses) < 2:
        return ""
    png = plots.panel_plot(horizon_panels(diagnoses), "horizon (steps ahead)", columns=3)
    return "<h3>All runs</h3>" + _plot(png, "open-loop prediction errors against horizon, every run")


def _diagnostics(runs: Sequence[Run]) -> str:
    from dreamrl.report import plots

    parts = [_comparison(runs)]
    for i, run in enumerate(runs):
        folder = RunDir(run.path).diagnostics
        problems: list[str] = []
        found = _newest_json(folder, problems) if folder.is_dir() else None
        parts.append(f"<h3>{esc(run.label)}</h3>")
        parts.extend(_absent(f"Could not read {p}") for p in problems)
        if found is None and not run.has_world_model:
            parts.append(_absent(f"No diagnostics: a {run.kind} baseline has no world model."))
            continue
        if found is None:
            parts.append(_absent(f"No diagnostics: {folder} holds no *.json (run `dreamrl diagnose`)."))
            continue
        path, d = found
        parts.append(f"<p>From <code>{esc(str(path))}</code>.</p>")
        if isinstance(d.get("summary"), str):
            parts.append(f'<p class="summary">{esc(d["summary"])}</p>')
        numbers = [
            ("checkpoint env steps", _fmt(d.get("step"), ",.0f")),
            ("horizon (steps predicted open loop)", _fmt(d.get("horizon"), ".0f")),
            ("context (steps observed first)", _fmt(d.get("context"), ".0f")),
            ("sequences", _fmt(d.get("sequences"), ".0f")),
            ("latent entropy", _fmt(d.get("latent_entropy"), ".4g")),
            ("latent perplexity", _fmt(d.get("latent_perplexity"), ".4g")),
            ("latent usage", _fmt(d.get("latent_usage"), ".4g")),
        ]
        recon = d.get("recon_error")
        probe = " (probe decoder on stopped latents)" if d.get("probe") else ""
        if isinstance(recon, dict):
            numbers += [(f"reconstruction error: {k}{probe}", _fmt(v, ".4g")) for k, v in recon.items()]
        parts.append(_table(["quantity", "value"], [[esc(k), esc(v)] for k, v in numbers], "numbers"))
        panels = horizon_panels([("", d)], first_color=i)
        if panels:
            png = plots.panel_plot(panels, "horizon (steps ahead)", columns=4)
            parts.append(_plot(png, f"{run.label}: open-loop prediction errors against horizon"))
        else:
            parts.append(_absent("No horizon curves (reward_error, continue_error, kl, drift) in the file."))
        images = d.get("images")
        if isinstance(images, dict) and images:
            parts.extend(
                _embed_file(path.parent, name, f"{run.label}: {key}{probe}") for key, name in images.items()
            )
        else:
            parts.append(_absent("No images named in the file."))
    return "".join(parts)


def _rewards(values: list[float], limit: int = 16) -> str:
    shown = " ".join(_fmt(v) for v in values[:limit])
    return shown + (f" … ({len(values)} in all)" if len(values) > limit else "")


def _whatifs(runs: Sequence[Run]) -> str:
    parts = []
    for run in runs:
        folder = RunDir(run.path).whatif
        parts.append(f"<h3>{esc(run.label)}</h3>")
        files = (
            sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
            if folder.is_dir()
            else []
        )
        if not files and not run.has_world_model:
            parts.append(_absent(f"No counterfactuals: a {run.kind} baseline has no world model."))
            continue
        if not files:
            parts.append(_absent(f"No counterfactuals: {folder} holds no *.json (run `dreamrl whatif`)."))
            continue
        if len(files) > MAX_WHATIFS:
            parts.append(_absent(f"Showing the newest {MAX_WHATIFS} of {len(files)} files."))
        for path in files[:MAX_WHATIFS]:
            problems: list[str] = []
            d = _read_json(path, problems)
            if not isinstance(d, dict):
                parts.extend(_absent(f"Could not read {p}") for p in problems or [f"{path}: not an object"])
                continue
            parts.append(
                f"<h4>{esc(path.name)}: from step t = {esc(_fmt(d.get('t'), '.0f'))}, "
                f"actions: {esc(str(d.get('actions', '—')))}</h4>"
            )
            rows = []
            for kind in ("factual", "counterfactual", "real"):
                entry = d.get(kind)
                if isinstance(entry, dict):
                    rows.append(
                        [kind, _fmt(entry.get("return")), esc(_rewards(_floats(entry.get("rewards"))))]
                    )
                else:
                    rows.append([kind, "—", "absent"])
            parts.append(_table(["rollout", "return", "rewards"], rows, "numbers"))
            if "image" in d:
                parts.append(_embed_file(path.parent, d["image"], f"{run.label}: {path.stem}"))
    return "".join(parts)


# ---------------------------------------------------------------------------- page

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 24px auto; padding: 0 20px; background: #fff; }
h1 { font-size: 28px; margin-bottom: 4px; } h2 { border-bottom: 2px solid #d0d7de; padding-bottom: 4px;
     margin-top: 36px; } h3 { margin-top: 24px; } h4 { margin: 16px 0 6px; font-weight: 600; }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } table.eval td:nth-child(n+3):nth-child(-n+8) { text-align: right; }
tr.agg td { background: #eef6ee; font-weight: 600; }
.ci { color: #57606a; font-size: 12px; font-weight: normal; }
.absent { color: #6e7781; font-style: italic; }
.summary { background: #f6f8fa; border-left: 4px solid #0969da; padding: 8px 12px; }
figure { margin: 10px 0 18px; } figcaption { color: #57606a; font-size: 13px; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
img.pixelated { image-rendering: pixelated; }
code { font-size: 13px; } nav a { margin-right: 14px; }
"""


def build_report(run_dirs: Sequence[Path]) -> tuple[str, list[str]]:
    """The page's HTML for ``run_dirs``, and one terminal line per cross-run aggregate."""
    runs = load_runs(run_dirs)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    evaluation, lines = _evaluation(runs)
    sections = [
        ("curves", "Learning curves", _curves(runs)),
        ("evaluation", "Evaluation", evaluation),
        ("diagnostics", "World-model diagnostics", _diagnostics(runs)),
        ("whatif", "Counterfactuals (what if)", _whatifs(runs)),
        ("speed", "Speed and memory", _speed(runs)),
    ]
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>' for key, title, content in sections
    )
    title = "dreamrl report: " + ", ".join(r.label for r in runs)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{_intro(runs, now)}<nav>{nav}</nav>{body}</body></html>\n"
    )
    return page, lines


def write_report(run_dirs: Sequence[Path], out: Path | None = None) -> tuple[Path, list[str]]:
    """Write the page to ``out`` (default ``<first run dir>/report.html``); returns its path."""
    if not run_dirs:
        raise ValueError("no run dirs given")
    page, lines = build_report(run_dirs)
    path = out if out is not None else RunDir(run_dirs[0]).report
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a page
    return path, lines
