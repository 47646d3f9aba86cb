"""The statistics of a comparison: curves with bootstrap bands, steps to a threshold.

Every function is pure and seeded. Seeds are the unit of resampling: a band or an
interval says how much an agent's figure moves when its seeds are drawn again (the
bootstrap over runs of one task, which is rliable's stratified bootstrap with one
stratum; :mod:`dreamrl.run.aggregate` holds the final-score statistics, IQM and mean).

- :func:`curve_band`: each seed's evaluation returns against env steps, interpolated
  onto the union of their evaluation steps, and at each step the mean over the seeds
  that reach it, with a percentile bootstrap interval of that mean;
- :func:`steps_to_threshold`: the first env step at which a seed's evaluation return
  reached the threshold (None: never, within its run);
- :func:`threshold_summary`: over seeds, the median steps to threshold (a seed that
  never reached it counts as infinitely many steps, so the median is finite only if at
  least half of the seeds reached it), its bootstrap interval (percentiles taken without
  interpolation, so that an infinite end stays one: "not reached"), and how many reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

REPS = 2000
CONFIDENCE = 0.95


class Band(NamedTuple):
    """A curve over seeds: ``steps [G]``, ``mean [G]`` and its interval ``low``, ``high`` [G]."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: np.ndarray  # [G]: how many seeds reach each step


def steps_to_threshold(steps: Sequence[float], returns: Sequence[float], threshold: float) -> int | None:
    """The first of ``steps`` (in order) whose return is at least ``threshold``; None if none."""
    for step, value in sorted(zip(steps, returns)):
        if np.isfinite(value) and value >= threshold:
            return int(step)
    return None


def on_grid(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Curves ``(steps, values)`` of several seeds on the union of their steps: ``grid [G]``
    and ``values [S, G]``, linearly interpolated inside each seed's own range of steps and
    NaN outside it (a seed that stopped early says nothing about later steps)."""
    grid = (
        np.unique(np.concatenate([np.asarray(s, np.float64) for s, _ in curves])) if curves else np.zeros(0)
    )
    out = np.full((len(curves), grid.size), np.nan)
    for i, (steps, values) in enumerate(curves):
        x = np.asarray(steps, np.float64)
        y = np.asarray(values, np.float64)
        order = np.argsort(x)
        x, y = x[order], y[order]
        inside = (grid >= x[0]) & (grid <= x[-1]) if x.size else np.zeros(grid.size, bool)
        out[i, inside] = np.interp(grid[inside], x, y)
    return grid, out


def _mean_over_seeds(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` of the finite entries (NaN where there are none), without warnings."""
    finite = np.isfinite(values)
    counts = finite.sum(axis)
    sums = np.where(finite, values, 0.0).sum(axis)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def bootstrap_band(
    values: np.ndarray, reps: int = REPS, confidence: float = CONFIDENCE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, low, high)`` ``[G]`` of ``values [S, G]`` (NaN: that seed has no value there):
    the mean over seeds and the percentile interval of the means of ``reps`` resamplings
    of the seeds with replacement. One seed gives an interval of zero width."""
    S = values.shape[0]
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, S, size=(reps, S))
    means = _mean_over_seeds(values[rows], axis=1)  # [reps, G]
    alpha = 100 * (1 - confidence) / 2
    low = np.full(values.shape[1], np.nan)
    high = np.full(values.shape[1], np.nan)
    for g in range(values.shape[1]):
        column = means[:, g][np.isfinite(means[:, g])]
        if column.size:
            low[g], high[g] = np.percentile(column, [alpha, 100 - alpha])
    return _mean_over_seeds(values, axis=0), low, high


def curve_band(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]],
    reps: int = REPS,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Band:
    """The mean curve of several seeds' ``(steps, returns)`` with its bootstrap band."""
    grid, values = on_grid(curves)
    mean, low, high = bootstrap_band(values, reps, confidence, seed)
    return Band(grid, mean, low, high, np.isfinite(values).sum(0))


def threshold_summary(
    per_seed: Sequence[int | None], reps: int = REPS, confidence: float = CONFIDENCE, seed: int = 0
) -> dict[str, Any]:
    """Steps to threshold over seeds (``None``: never reached; see the module docstring).

    Returns ``{"median", "ci": [low, high], "reached", "seeds", "per_seed"}``; an infinite
    median or interval end (not reached by half of the seeds, or of a resampling) is None.
    """
    x = np.asarray([np.inf if s is None else float(s) for s in per_seed], np.float64)
    if x.size == 0:
        raise ValueError("no seeds")
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, x.size, size=(reps, x.size))], axis=1)
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(medians, [alpha, 100 - alpha], method="inverted_cdf")

    def finite(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return {
        "median": finite(float(np.median(x))),
        "ci": [finite(low), finite(high)],
        "reached": int(np.isfinite(x).sum()),
        "seeds": int(x.size),
        "per_seed": [None if s is None else int(s) for s in per_seed],
    }
