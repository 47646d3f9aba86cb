"""The report puts world models side by side: one plot of open-loop errors for all runs."""

from __future__ import annotations

import json
from pathlib import Path

from dreamrl.report.html import build_report, horizon_panels

LATENT = {
    "reward_error": [0.1, 0.2, 0.3],
    "continue_error": [0.0, 0.01, 0.02],
    "kl": [1.0, 2.0, 3.0],
    "drift": [0.1, 0.2, 0.3],
    "obs_error": {"image": [0.1, 0.2, 0.4]},
    "recon_error": {"image": 0.05},
    "probe": True,
}
PIXEL = {
    "reward_error": [0.2, 0.4, 0.8],
    "continue_error": [0.0, 0.02, 0.04],
    "obs_error": {"image": [0.05, 0.3, 0.9]},
    "probe": False,
}


def test_horizon_panels_hold_one_series_per_run_and_only_what_each_has():
    panels = horizon_panels([("a (decoderfree)", LATENT), ("b (pixel)", PIXEL)])
    assert [s.label for s in panels["reward_error"]] == ["a (decoderfree)", "b (pixel)"]
    assert [s.label for s in panels["kl"]] == ["a (decoderfree)"]  # the pixel model has no latent
    assert [s.label for s in panels["obs_error: image (probe)"]] == ["a (decoderfree)"]
    assert [s.label for s in panels["obs_error: image"]] == ["b (pixel)"]
    assert list(panels["obs_error: image"][0].y) == [0.05, 0.3, 0.9]
    assert list(panels["reward_error"][1].x) == [1, 2, 3]


def write_run(path: Path, wm: str, diagnosis: dict) -> None:
    (path / "diagnostics").mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"task": "CartPole-v1", "seed": 0, "agent": {"wm": wm}}))
    (path / "metrics.jsonl").write_text(
        json.dumps({"step": 100, "eval/return": 10.0, "eval/return_std": 1.0}) + "\n"
    )
    (path / "diagnostics" / "diagnose-100.json").write_text(json.dumps({**diagnosis, "step": 100}))


def test_report_of_two_world_models_names_them_and_plots_them_together(tmp_path):
    write_run(tmp_path / "a", "decoderfree", LATENT)
    write_run(tmp_path / "b", "pixel", PIXEL)
    page, _ = build_report([tmp_path / "a", tmp_path / "b"])
    assert "<h3>All runs</h3>" in page
    assert "open-loop prediction errors against horizon, every run" in page
    assert "decoderfree" in page and "pixel" in page
    assert "(probe decoder on stopped latents)" in page


def test_report_of_one_run_has_no_comparison(tmp_path):
    write_run(tmp_path / "a", "rssm", {**LATENT, "probe": False})
    page, _ = build_report([tmp_path / "a"])
    assert "<h3>All runs</h3>" not in page
    assert "probe decoder" not in page
