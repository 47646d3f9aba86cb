"""Plots for the HTML report, each returned as PNG bytes to embed as a data: URI.

matplotlib is used through its object API (``Figure`` drawn by an explicit Agg canvas)
inside each function, never ``pyplot`` at import: no global backend is switched, no
window is opened, and importing this module stays cheap; it works with no display.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# matplotlib's default cycle (tab10): run dir ``i`` has colour ``i`` in every plot.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass(frozen=True)
class Series:
    """One line: ``x`` and ``y`` of equal length ``[N]``; ``band`` (``[N]``) shades ``y ± band``,
    or ``low`` and ``high`` (``[N]``) shade an interval of their own (a bootstrap band)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    band: Sequence[float] | None = None
    color: str | None = None
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure with an Agg canvas attached (the only backend used, set here, per figure)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, FigureCanvasAgg(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version string or URL inside
    return buf.getvalue()


def smooth(y: ArrayLike, window: int) -> np.ndarray:
    """Trailing moving average of ``y`` (``[N]`` -> ``[N]``), shorter windows at the start."""
    values = np.asarray(y, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - window, 0)
    return np.asarray((sums[ends] - sums[starts]) / (ends - starts))


def _draw(ax: Any, series: Sequence[Series], smoothed: bool) -> None:
    for i, s in enumerate(series):
        color = s.color or COLORS[i % len(COLORS)]
        x = np.asarray(s.x, dtype=np.float64)
        y = np.asarray(s.y, dtype=np.float64)
        if s.band is not None:
            band = np.asarray(s.band, dtype=np.float64)
            ax.fill_between(x, y - band, y + band, color=color, alpha=0.2, linewidth=0)
        if s.low is not None and s.high is not None:
            low, high = np.asarray(s.low, np.float64), np.asarray(s.high, np.float64)
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
        # Noisy per-episode curves: the raw points faint, a moving average on top.
        window = max(1, x.size // 20) if smoothed else 1
        if window > 1:
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, smooth(y, window), color=color, linewidth=1.8, label=s.label)
        else:
            ax.plot(
                x, y, color=color, linewidth=1.6, marker="o" if x.size <= 30 else None, ms=3, label=s.label
            )


def line_plot(
    series: Sequence[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    smoothed: bool = False,
    size: tuple[float, float] = (7.0, 3.6),
) -> bytes:
    """One axes with a line per series (and its ± band); PNG bytes."""
    fig, _ = _figure(*size)
    ax = fig.add_subplot()
    _draw(ax, series, smoothed)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(s.label for s in series):
        ax.legend(fontsize="small")
    return _png(fig)


def panel_plot(
    panels: Mapping[str, Sequence[Series]],
    xlabel: str,
    columns: int = 4,
    smoothed: bool = False,
    panel_size: tuple[float, float] = (3.2, 2.4),
) -> bytes:
    """A grid of small axes, one per ``{title: series}`` entry, sharing a legend; PNG bytes."""
    names = list(panels)
    cols = max(1, min(columns, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, _ = _figure(panel_size[0] * cols, panel_size[1] * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        _draw(ax, panels[names[i]], smoothed)
        ax.set_title(names[i], fontsize="medium")
        ax.set_xlabel(xlabel, fontsize="small")
        ax.tick_params(labelsize="small")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if len(labels) > 1:
        fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 4), fontsize="small")
    return _png(fig)
