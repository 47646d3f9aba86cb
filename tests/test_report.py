"""`dreamrl eval` aggregates and `dreamrl report`, end to end: a real tiny training, hand-made
diagnostics and counterfactual files, and the page opened in headless Chromium.

The screenshot is kept at artifacts/report-screenshot.png (and the page beside it).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamrl.cli.report import report as cmd_report
from dreamrl.report import build_report
from dreamrl.report.html import curve_axis, load_runs, loop_summary
from dreamrl.run.machine import machine_label, read_sessions

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
HEADINGS = (
    "Learning curves",
    "Evaluation",
    "World-model diagnostics",
    "Counterfactuals (what if)",
    "Speed and memory",
)
# Pure colours painted into the hand-made images: finding them in the screenshot shows
# that the browser decoded and drew each embedded image.
MAGENTA, CYAN, YELLOW = (255, 0, 255), (0, 255, 255), (255, 255, 0)
PLOT_BLUE = (31, 119, 180)  # matplotlib's first colour: the first run dir's curves


def dreamrl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"dreamrl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _frames(color: tuple[int, int, int], frames: int = 3) -> np.ndarray:
    """A strip of 64x64 frames: a gradient with a solid ``color`` square in each."""
    y, x = np.mgrid[0:64, 0 : 64 * frames]
    img = np.stack([x % 256, y * 4, (x + y) % 256], -1).astype(np.uint8)
    for f in range(frames):
        img[16:48, 64 * f + 16 : 64 * f + 48] = color
    return img


def _diagnostics(run: Path) -> None:
    folder = run / "diagnostics"
    folder.mkdir()
    Image.fromarray(_frames(MAGENTA)).save(folder / "openloop-300.png")
    gif = [Image.fromarray(_frames(YELLOW)), Image.fromarray(_frames(YELLOW)[:, ::-1].copy())]
    gif[0].save(folder / "openloop-300.gif", save_all=True, append_images=gif[1:], duration=300, loop=0)
    h = np.arange(1, 11)
    diag = {
        "step": 300,
        "horizon": 10,
        "context": 5,
        "sequences": 4,
        "reward_error": (0.1 * np.sqrt(h)).tolist(),
        "continue_error": (0.01 * h).tolist(),
        "kl": (0.5 + 0.2 * h).tolist(),
        "recon_error": {"vector": 0.125},
        "latent_entropy": 2.5,
        "latent_perplexity": 12.25,
        "latent_usage": 0.375,
        "drift": (0.05 * h).tolist(),
        "summary": "Rewards are predicted well for 4 steps; the continue flag drifts after 8.",
        "images": {"openloop": "openloop-300.png", "openloop_animated": "openloop-300.gif"},
    }
    (folder / "diag-300.json").write_text(json.dumps(diag))
    # An older file: the newest (highest step) is the one shown.
    (folder / "diag-100.json").write_text(json.dumps({**diag, "step": 100, "summary": "OLDER FILE"}))


def _whatif(run: Path) -> None:
    folder = run / "whatif"
    folder.mkdir()
    Image.fromarray(_frames(CYAN, frames=2)).save(folder / "whatif-12.png")
    whatif = {
        "t": 12,
        "actions": "always push left",
        "factual": {"rewards": [1.0] * 8, "return": 8.0},
        "counterfactual": {"rewards": [1.0] * 5 + [0.0] * 3, "return": 5.0},
        "real": {"rewards": [1.0] * 6, "return": 6.0},
        "image": "whatif-12.png",
    }
    (folder / "whatif-12.json").write_text(json.dumps(whatif))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cartpole_run) -> dict[str, Path]:
    """run1 (trained, diagnostics, whatif), run2 and run3 (copies of it: seeds of one task)."""
    base = tmp_path_factory.mktemp("report")
    run1 = base / "run1"
    shutil.copytree(cartpole_run, run1)  # a real tiny training (tests/conftest.py)
    # Training may write diagnostics of its own (when evaluation episodes are long enough):
    # the pages checked here hold only the hand-made files below.
    for folder in ("diagnostics", "whatif"):
        shutil.rmtree(run1 / folder, ignore_errors=True)
    run2, run3 = base / "run2", base / "run3"
    shutil.copytree(run1, run2)  # evaluated only during training: the report reads metrics.jsonl
    shutil.copytree(run1, run3)
    _diagnostics(run1)
    _whatif(run1)
    return {"run1": run1, "run2": run2, "run3": run3, "base": base}


@pytest.fixture(scope="module")
def evaluated(runs) -> dict:
    proc = dreamrl("eval", "--logdir", str(runs["run1"]), "--episodes", "3", "--json")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report(runs, evaluated) -> Path:
    proc = dreamrl("report", "--logdir", str(runs["run1"]), str(runs["run2"]))
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("Report: ")
    path = Path(last.removeprefix("Report: "))
    assert path == (runs["run1"] / "report.html").resolve()
    assert "CartPole-v1: over 2 run dirs, IQM" in proc.stdout
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(path, ARTIFACTS / "report.html")
    return path


def test_eval_prints_and_saves_iqm_median_and_ci(runs, evaluated):
    returns = sorted(evaluated["returns"])
    assert evaluated["episodes"] == 3 and evaluated["env_steps"] == 300  # the existing keys stay
    assert evaluated["mean_return"] == pytest.approx(sum(returns) / 3)
    assert evaluated["median"] == returns[1]
    assert evaluated["iqm"] == pytest.approx(sum(returns) / 3)  # under 4 episodes nothing is trimmed
    assert (
        min(returns)
        <= evaluated["ci_low"]
        <= evaluated["mean_return"]
        <= evaluated["ci_high"]
        <= max(returns)
    )
    saved = json.loads((runs["run1"] / "eval" / "eval-300.json").read_text())
    assert saved == evaluated


def test_eval_of_a_checkpoint_dir_saves_in_its_run_dir(runs):
    ckpt = sorted((runs["run3"] / "checkpoints").iterdir())[-1]
    proc = dreamrl("eval", "--logdir", str(ckpt), "--episodes", "2")
    assert "IQM" in proc.stdout and "95% bootstrap CI" in proc.stdout
    saved = json.loads((runs["run3"] / "eval" / "eval-300.json").read_text())
    assert saved["episodes"] == 2 and saved["ci_low"] <= saved["mean_return"] <= saved["ci_high"]


class _Page(HTMLParser):
    """The page's images, links, scripts and heading texts."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self.headings: list[str] = []
        self._heading = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        for key in ("href", "src"):
            if tag != "img" and a.get(key):
                self.links.append(a[key] or "")
        self.scripts += tag == "script"
        self._heading = tag in ("h1", "h2", "h3")

    def handle_endtag(self, tag: str) -> None:
        self._heading = False

    def handle_data(self, data: str) -> None:
        if self._heading:
            self.headings.append(data.strip())


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_report_is_one_self_contained_file(report, runs, evaluated):
    html = report.read_text()
    page = _parse(html)
    # 3 plots (curves, losses, run1's horizon curves) + 2 diagnostics images + 1 whatif image.
    assert len(page.imgs) == 6
    assert all(src.startswith(("data:image/png;base64,", "data:image/gif;base64,")) for src in page.imgs)
    assert sum(src.startswith("data:image/gif") for src in page.imgs) == 1
    assert all(link.startswith("#") for link in page.links)  # only in-page anchors
    assert page.scripts == 0
    for heading in HEADINGS:
        assert heading in page.headings
    text = _parse_text(html)
    assert "run1" in text and "run2" in text and "dreamrl 0." in text
    assert "aggregate of 2 run dirs" in text and "metrics.jsonl (step 300)" in text
    assert "eval/eval-300.json" in text and f"{evaluated['iqm']:.2f}" in text
    assert "Rewards are predicted well for 4 steps" in text and "OLDER FILE" not in text
    assert "always push left" in text and "counterfactual" in text
    assert "No diagnostics" in text and "No counterfactuals" in text  # run2 has neither
    assert "waiting for envs" in text and "peak resident MB" in text
    assert re.search(r"run1 \d+\.\d \d+\.\d \d+\.\d{3} [\d,]+ \d+%", text), text  # the speed row
    # The machine its one training session recorded, in the same words compare uses.
    (session,) = read_sessions(runs["run1"])
    assert machine_label(session["machine"]) in text


def _parse_text(html: str) -> str:
    """The page's text as a reader sees it: no tags, no data: URIs."""
    parts: list[str] = []
    parser = HTMLParser()
    parser.handle_data = parts.append  # type: ignore[method-assign]
    parser.feed(html)
    return " ".join(parts)


def test_report_of_an_empty_or_odd_run_dir_says_what_is_absent(tmp_path):
    run = tmp_path / "empty"
    (run / "diagnostics").mkdir(parents=True)
    (run / "diagnostics" / "broken.json").write_text("{not json")
    (run / "whatif").mkdir()
    escape = {"t": 1, "actions": "x", "factual": {"rewards": [], "return": 0.0}, "image": "../../secret.png"}
    (run / "whatif" / "w.json").write_text(json.dumps(escape))
    (tmp_path / "secret.png").write_bytes(b"not for the page")
    html, lines = build_report([run])
    text = _parse_text(html)
    assert lines == [] and _parse(html).imgs == []
    assert "No episode scores or evaluation records" in text and "No evaluation found" in text
    assert "Could not read" in text and "broken.json" in text
    assert "No timing records" in text
    assert "is not a file name" in text  # a name outside the folder is never embedded


def _metrics_dir(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_curves_of_an_offline_run_are_drawn_against_updates(tmp_path):
    offline = _metrics_dir(tmp_path / "offline", [
        {"step": 0, "train/updates": 400, "eval/return": 20.0, "loss/reward": 0.5},
        {"step": 0, "train/updates": 800, "eval/return": 90.0, "loss/reward": 0.3},
    ])  # fmt: skip
    online = _metrics_dir(tmp_path / "online", [
        {"step": 500, "train/updates": 250, "eval/return": 30.0},
    ])  # fmt: skip
    assert curve_axis(load_runs([offline])) == ("train/updates", "updates")
    assert curve_axis(load_runs([online])) == ("step", "env steps")
    assert curve_axis(load_runs([offline, online])) == ("step", "env steps")  # one took env steps
    text = _parse_text(build_report([offline])[0])
    assert "evaluation return against updates" in text and "Loss terms against updates" in text


def test_loop_summary_weights_each_window_by_its_length():
    records = [
        {"step": 0, "time/elapsed": 0.0, "time/train_frac": 0.0, "time/env_frac": 0.0},
        {"step": 100, "time/elapsed": 10.0, "time/train_frac": 0.9, "time/env_frac": 0.1},
        {"step": 150, "eval/return": 3.0, "time/elapsed": 12.0},  # an eval record: no split
        {"step": 400, "time/elapsed": 40.0, "time/train_frac": 0.5, "time/env_frac": 0.2,
         "train/updates": 80.0, "mem/peak_rss_mb": 900.0},
    ]  # fmt: skip
    s = loop_summary(records)
    assert s["train_frac"] == pytest.approx((0.9 * 10 + 0.5 * 30) / 40)
    assert s["env_frac"] == pytest.approx((0.1 * 10 + 0.2 * 30) / 40)
    assert math.isnan(s["act_frac"])  # never logged
    assert s["env_steps_per_s"] == pytest.approx(10.0) and s["updates_per_s"] == pytest.approx(2.0)
    assert s["peak_rss_mb"] == 900.0 and s["minutes"] == pytest.approx(40 / 60)
    old_run = loop_summary([{"step": 10, "time/elapsed": 5.0}])  # logged before the split existed
    assert math.isnan(old_run["train_frac"]) and math.isnan(old_run["peak_rss_mb"])


def test_report_command_writes_where_asked_and_refuses_missing_dirs(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "pages" / "page.html"
    assert cmd_report([run], out) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"Report: {out.resolve()}"
    assert out.read_text().startswith("<!DOCTYPE html>") and not (run / "report.html").exists()
    assert cmd_report([run, tmp_path / "nope"]) == 2
    assert "no such run dir" in capsys.readouterr().err


def _chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={user_dir}",
    ]
    return subprocess.run(
        ["chromium", *flags, *args], capture_output=True, text=True, timeout=120, check=True
    )


def _near(pixels: np.ndarray, color: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(pixels.astype(int) - np.array(color)).max(-1) <= tol).sum())


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium binary (Debian's chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    url = report.as_uri()
    _chromium(f"--screenshot={shot}", "--window-size=1280,4000", url, user_dir=tmp_path / "profile")
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (4000, 1280, 3)
    colors = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colors > 500, f"a nearly blank page: {colors} colours"
    assert _near(pixels, PLOT_BLUE, tol=4) > 500  # the plots were drawn
    for name, color in (("open-loop PNG", MAGENTA), ("open-loop GIF", YELLOW), ("whatif PNG", CYAN)):
        assert _near(pixels, color) > 32 * 32, f"the {name} is not in the screenshot"
    dom = _chromium("--dump-dom", url, user_dir=tmp_path / "profile").stdout
    page = _parse(dom)
    assert len(page.imgs) == 6 and all(src.startswith("data:image/") for src in page.imgs)
    for heading in HEADINGS:
        assert heading in page.headings
