"""benchmarks/learning.py's curve: evaluation returns against env steps and wall time,
with the open-loop reward and continue errors of the diagnostics after each evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamrl.rundir import RunDir, diagnosis_name

from fixtures.benchmark_scripts import load_benchmark


def fake_run(run_dir: Path) -> None:
    """Two evaluations (100 and 200 env steps); diagnostics after the second only."""
    paths = RunDir(run_dir)
    run_dir.mkdir(parents=True)
    records = [
        {"step": 50, "loss/total": 1.0, "time/elapsed": 30.0},
        {"step": 100, "eval/return": 20.0, "eval/return_std": 2.0, "time/elapsed": 60.0},
        {"step": 200, "eval/return": 450.0, "eval/return_std": 5.0, "time/elapsed": 180.0},
    ]
    paths.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    paths.diagnostics.mkdir()
    diagnosis = {
        "reward_error": [0.01 * (h + 1) for h in range(15)],  # 0.01 at h=1 ... 0.15 at h=15
        "continue_error": [0.1 * (h + 1) for h in range(15)],
    }
    (paths.diagnostics / diagnosis_name(200)).write_text(json.dumps(diagnosis))


def test_the_curve_holds_the_errors_at_horizons_1_5_15_where_diagnostics_ran(tmp_path, capsys):
    bench = load_benchmark("learning")
    run_dir = tmp_path / "run"
    fake_run(run_dir)
    points = bench.curve(run_dir)
    assert [(p["step"], p["return"], p["minutes"]) for p in points] == [(100, 20.0, 1.0), (200, 450.0, 3.0)]
    assert points[0]["openloop"] == {}
    assert points[1]["openloop"]["reward"] == pytest.approx({"1": 0.01, "5": 0.05, "15": 0.15})
    assert points[1]["openloop"]["continue"] == pytest.approx({"1": 0.1, "5": 0.5, "15": 1.5})

    check = bench.CHECKS["cartpole_pixels_demo"]  # target 400
    summary = bench.report("cartpole_pixels_demo", check, points, {}, ["AMD EPYC, 2 cores, avx2"])
    out = capsys.readouterr().out
    assert "REACHED at 200 env steps after 3.0 min" in out
    assert "trained on: AMD EPYC, 2 cores, avx2" in out and summary["machines"] == ["AMD EPYC, 2 cores, avx2"]
    assert "0.0100 / 0.0500 / 0.1500; 0.1000 / 0.5000 / 1.5000" in out
    assert summary["reached_at"] == 200 and summary["curve"] == points
