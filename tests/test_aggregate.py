"""Aggregation of scores (dreamrl/run/aggregate.py) against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dreamrl.run import aggregate as agg


def test_iqm_is_the_mean_of_the_middle_half():
    assert agg.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean(3, 4, 5, 6)
    assert agg.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)  # order does not matter
    assert agg.iqm([1, 2, 3, 4, 5, 6, 7, 1000]) == pytest.approx(4.5)  # an outlier is cut
    assert agg.iqm(range(1, 11)) == pytest.approx(5.5)  # int(2.5) = 2 cut each end: mean(3..8)
    assert agg.iqm([1, 2, 3, 5]) == pytest.approx(2.5)  # scipy's docstring example
    assert agg.iqm([1, 2, 9]) == pytest.approx(4.0)  # under 4 scores nothing is cut: the mean
    assert agg.iqm([7.0]) == 7.0


def test_iqm_of_a_matrix_pools_runs_and_tasks():
    assert agg.iqm([[1, 2], [3, 4], [5, 6], [7, 8]]) == pytest.approx(4.5)


def test_iqm_matches_scipy_trim_mean():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in range(1, 23):
        x = rng.normal(size=n) * 10
        assert agg.iqm(x) == pytest.approx(stats.trim_mean(x, 0.25))


def test_mean_and_median():
    assert agg.mean([[1, 10], [3, 20]]) == pytest.approx(8.5)
    assert agg.median([1, 2, 10]) == 2.0
    assert agg.median([4, 1, 3, 2]) == 2.5
    # A matrix [runs, tasks]: the median over tasks of per-task means (rliable's aggregate_median).
    assert agg.median([[1, 10, 100], [3, 20, 300]]) == pytest.approx(15.0)  # median(2, 15, 200)
    assert agg.median([[1], [2], [10]]) == pytest.approx(13 / 3)  # one task: its mean


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        agg.iqm([])
    with pytest.raises(ValueError, match="shape"):
        agg.mean(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="confidence"):
        agg.stratified_bootstrap_ci([1, 2], agg.mean, confidence=1.5)


def test_ci_of_constant_scores_is_degenerate_at_the_constant():
    for statistic in (agg.mean, agg.median, agg.iqm):
        assert agg.stratified_bootstrap_ci([3.0] * 10, statistic) == (3.0, 3.0)
        assert agg.stratified_bootstrap_ci(np.full((5, 3), -2.5), statistic) == (-2.5, -2.5)


def test_ci_of_two_runs_by_hand():
    # Resampling [0, 1] twice gives a mean of 0, 0.5 or 1 with probability 1/4, 1/2, 1/4:
    # the 2.5% and 97.5% quantiles are 0 and 1, the 30% and 70% ones are both 0.5.
    assert agg.stratified_bootstrap_ci([0.0, 1.0], agg.mean) == (0.0, 1.0)
    assert agg.stratified_bootstrap_ci([0.0, 1.0], agg.mean, confidence=0.4) == (0.5, 0.5)


def test_bootstrap_resamples_runs_within_each_task():
    # Task 0 scores 0 on every run, task 1 scores 10: resampling runs inside each task
    # never changes the mean; a bootstrap that mixed tasks would.
    scores = np.array([[0.0, 10.0]] * 6)
    assert agg.stratified_bootstrap_ci(scores, agg.mean) == (5.0, 5.0)
    # The statistic sees the resample in the input's shape.
    shapes = set()

    def spy(x: np.ndarray) -> float:
        shapes.add(x.shape)
        return float(x.mean())

    agg.stratified_bootstrap_ci(np.arange(12.0).reshape(4, 3), spy, reps=5)
    agg.stratified_bootstrap_ci(np.arange(4.0), spy, reps=5)
    assert shapes == {(4, 3), (4,)}


def test_ci_contains_the_estimate_and_is_repeatable():
    scores = np.array([3.0, 9.0, 1.0, 4.0, 7.0, 5.0, 8.0, 2.0, 6.0, 10.0])
    for statistic in (agg.mean, agg.median, agg.iqm):
        low, high = agg.stratified_bootstrap_ci(scores, statistic, seed=1)
        assert low < statistic(scores) < high
        assert agg.stratified_bootstrap_ci(scores, statistic, seed=1) == (low, high)
    assert agg.stratified_bootstrap_ci(scores, agg.mean, seed=2) != agg.stratified_bootstrap_ci(
        scores, agg.mean, seed=1
    )
    # A wider confidence level gives a wider interval.
    low90, high90 = agg.stratified_bootstrap_ci(scores, agg.mean, confidence=0.9)
    low99, high99 = agg.stratified_bootstrap_ci(scores, agg.mean, confidence=0.99)
    assert low99 <= low90 and high90 <= high99


def test_aggregate_reports_every_statistic_with_its_interval():
    out = agg.aggregate([[1, 2], [3, 4], [5, 6], [7, 8]], reps=500)
    assert out["runs"] == 4 and out["tasks"] == 2 and out["confidence"] == 0.95
    assert out["mean"] == pytest.approx(4.5)
    assert out["median"] == pytest.approx(4.5)  # median(mean(1,3,5,7), mean(2,4,6,8)) = median(4, 5)
    assert out["iqm"] == pytest.approx(4.5)
    for name in ("mean", "median", "iqm"):
        low, high = out[f"{name}_ci"]
        assert low <= out[name] <= high
    single = agg.aggregate([9.0, 9.0, 10.0])
    assert single["tasks"] == 1 and single["median"] == 9.0 and single["iqm"] == pytest.approx(28 / 3)
