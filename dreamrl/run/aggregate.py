"""Aggregate scores across episodes, seeds and tasks: mean, median, IQM and bootstrap CIs.

The definitions are rliable's (Agarwal et al., "Deep RL at the Edge of the Statistical
Precipice", NeurIPS 2021), so numbers here compare with papers that report them:

- a score matrix has shape ``[runs, tasks]``: ``scores[n, m]`` is run ``n``'s score on
  task ``m`` (a run's score is usually its mean evaluation return). A 1-D array is the
  scores of one task, e.g. one run's evaluation episodes or several seeds' scores.
- ``iqm``: the interquartile mean, the 25%-trimmed mean of all scores together
  (``scipy.stats.trim_mean(scores, 0.25, axis=None)``, rliable's ``aggregate_iqm``).
- ``mean``: the mean of all scores (rliable's ``aggregate_mean``: the mean of per-task
  means, the same number for a full matrix).
- ``median``: for a 1-D array, its median; for a matrix, the median over tasks of each
  task's mean score (rliable's ``aggregate_median``). A one-column matrix therefore
  gives that column's mean: pass a 1-D array for the median of runs on one task.
- ``stratified_bootstrap_ci``: rliable's stratified bootstrap with its default
  percentile interval: each replicate resamples, with replacement, the runs of every
  task independently (tasks are strata, never resampled), the statistic is computed on
  it, and the interval is the ``(1-c)/2`` and ``(1+c)/2`` percentiles of the replicates
  (numpy's linear interpolation, as arch's ``conf_int(method="percentile")``).

Why not rliable itself: rliable 1.2.0 (its latest release, an sdist only) requires
``arch>=5.3.1,<8``, scipy, seaborn, and through them pandas and statsmodels (about 300 MB
installed). With numpy 2 the resolver picks arch 7.2.0 and pandas 3, and
``import rliable.library`` then fails inside arch (``TypeError: deprecate_kwarg() missing
1 required positional argument``); it works only with an extra ``pandas<3`` pin. The four
functions it would provide here are about 60 lines of numpy, written below with the same
definitions and checked against rliable (with pandas<3) during development. scipy is not
a dependency of dreamrl either (only dm_control pulls it in), hence the numpy trimmed mean.

Bootstrap replicates use ``numpy.random.default_rng(seed)``: the same seed gives the same
interval, but not rliable's exact draws (it uses the global ``RandomState``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

Statistic = Callable[[np.ndarray], float]


def _scores(scores: ArrayLike) -> np.ndarray:
    """Scores as a float64 array of 1 or 2 dimensions, refusing empty input."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"scores must be 1-D [runs] or 2-D [runs, tasks]; got shape {x.shape}")
    if x.size == 0:
        raise ValueError("scores are empty")
    return x


def mean(scores: ArrayLike) -> float:
    """Mean of all scores. ``scores``: ``[runs]`` or ``[runs, tasks]``."""
    return float(np.mean(_scores(scores)))


def median(scores: ArrayLike) -> float:
    """Median: of the values for ``[runs]``; of per-task means for ``[runs, tasks]`` (rliable)."""
    x = _scores(scores)
    return float(np.median(x if x.ndim == 1 else x.mean(axis=0)))


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean of all scores: the mean of the middle 50% once sorted.

    ``scores``: ``[runs]`` or ``[runs, tasks]``, flattened. ``int(0.25 * n)`` scores are cut
    from each end (rounded down, as ``scipy.stats.trim_mean(x, 0.25)``): IQM of 1..8 is
    mean(3, 4, 5, 6) = 4.5; with fewer than 4 scores nothing is cut and it is the mean.
    """
    x = np.sort(_scores(scores), axis=None)
    cut = int(0.25 * x.size)
    return float(np.mean(x[cut : x.size - cut]))


def stratified_bootstrap_ci(
    score_matrix: ArrayLike,
    statistic: Statistic,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile confidence interval of ``statistic`` by the stratified bootstrap.

    ``score_matrix``: ``[runs, tasks]``, or ``[runs]`` for one task. Each of ``reps``
    replicates draws, for every task independently, ``runs`` run indices with replacement;
    ``statistic`` gets the resampled array in the input's shape and returns a float.
    Returns ``(low, high)``: the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
    quantiles of the replicates. Constant scores give a degenerate interval at the constant.
    """
    if reps < 1:
        raise ValueError(f"reps must be at least 1; got {reps}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}")
    x = _scores(score_matrix)
    matrix = x.reshape(x.shape[0], -1)  # [runs, tasks]
    runs, tasks = matrix.shape
    rng = np.random.default_rng(seed)
    columns = np.arange(tasks)[None, :]  # the strata: a task's column is never resampled
    values = np.empty(reps)
    for i in range(reps):
        rows = rng.integers(0, runs, size=(runs, tasks))  # runs resampled within each task
        values[i] = statistic(matrix[rows, columns].reshape(x.shape))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


STATISTICS: dict[str, Statistic] = {"mean": mean, "median": median, "iqm": iqm}


def aggregate(
    score_matrix: ArrayLike, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Mean, median and IQM of ``score_matrix`` (``[runs, tasks]`` or ``[runs]``) with CIs.

    Returns ``{"runs", "tasks", "confidence", "mean", "mean_ci": [low, high], "median",
    "median_ci", "iqm", "iqm_ci"}``; every interval is a stratified bootstrap with ``reps``
    replicates from ``seed``.
    """
    x = _scores(score_matrix)
    out: dict[str, Any] = {
        "runs": int(x.shape[0]),
        "tasks": 1 if x.ndim == 1 else int(x.shape[1]),
        "confidence": confidence,
    }
    for name, statistic in STATISTICS.items():
        out[name] = statistic(x)
        out[f"{name}_ci"] = list(stratified_bootstrap_ci(x, statistic, reps, confidence, seed))
    return out
