"""Runs that plan: a debug run that collects with the planner (agent.act=mpc) logs the
planner's figures with its collection metrics and its evaluations'; `dreamrl eval
--checkpoint` picks any saved checkpoint; benchmarks/planning.py's curve evaluates the
actor and the planner from every checkpoint of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamrl.cli import main
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.logging import read_metrics
from dreamrl.rundir import RunDir

from fixtures.benchmark_scripts import load_benchmark

SMALL_MPC = ["agent.mpc.samples=16", "agent.mpc.elites=4", "agent.mpc.policy_samples=2"]
GAMMA = 1 - 1 / 333  # the agent's discount (agent.horizon)
WHOLE = 1 + GAMMA + GAMMA**2  # CartPole pays 1 a step: a whole horizon of 3 received


@pytest.fixture(scope="module")
def planning_run(tmp_path_factory) -> Path:
    """CartPole-v1 collected by planning, debug-sized: 100 env steps, then resumed to 200,
    so that two checkpoints (at 100 and 200) are kept; evaluated at 100 and 200."""
    logdir = tmp_path_factory.mktemp("mpc") / "run"
    args = [
        "train",
        "--env",
        "CartPole-v1",
        "--logdir",
        str(logdir),
        "--preset",
        "debug",
        "mpc",
        "--no-progress",
    ]
    settings = ["run.train_ratio=4", "run.eval_eps=2", "run.eval_every=100", "run.log_every=0"]
    settings += ["compute.threads=1", *SMALL_MPC]
    assert main([*args, "--steps", "100", *settings]) == 0
    assert main([*args, "--steps", "200", *settings]) == 0
    assert [s for s, _ in list_checkpoints(logdir)] == [100, 200]
    return logdir


def test_collecting_by_planning_logs_the_planners_figures(planning_run):
    records = read_metrics(planning_run)
    collected = [r for r in records if "mpc/ms_per_call" in r]
    assert len(collected) > 10
    for r in collected:
        assert r["mpc/ms_per_call"] > 0 and 0 <= r["mpc/differs_from_actor"] <= 1
        assert not any(k.startswith("eval/") for k in r)  # evaluation's planning is kept apart
    matched = [r for r in collected if "mpc/horizon_windows" in r]
    assert matched, "no planned step was matched with the rewards that followed it"
    # Every reward is 1: a whole window receives 1 + g + g^2, one cut by a terminal less.
    assert all(1.0 <= r["mpc/horizon_received"] <= WHOLE + 1e-6 for r in matched)
    assert all(
        abs(r["mpc/horizon_error"] - (r["mpc/horizon_planned"] - r["mpc/horizon_received"])) < 1e-6
        for r in matched
    )
    evals = [r for r in records if "eval/return" in r]
    assert [r["step"] for r in evals] == [100, 200]
    assert all(r["eval/mpc/ms_per_call"] > 0 and "eval/mpc/differs_by" in r for r in evals)


def test_eval_picks_any_checkpoint_by_its_env_step(planning_run, capsys):
    base = ["eval", "--logdir", str(planning_run), "--episodes", "1", "--envs", "1", "--json"]
    results = {}
    for step in (100, 200):
        assert main([*base, "--checkpoint", str(step)]) == 0
        results[step] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert results[step]["env_steps"] == step and results[step]["act"] == "mpc"
        assert Path(results[step]["checkpoint"]) == RunDir(planning_run).checkpoint(step)
    saved = sorted(p.name for p in RunDir(planning_run).evals.iterdir())
    assert saved == ["eval-100-mpc.json", "eval-200-mpc.json"]
    # A checkpoint dir given by its path, acting with the actor from it.
    assert main([*base, "--checkpoint", str(RunDir(planning_run).checkpoint(100)), "--act", "actor"]) == 0
    actor = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert actor["env_steps"] == 100 and actor["act"] == "actor" and "mpc/ms_per_call" not in actor
    assert main([*base, "--checkpoint", "150"]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint 150: no checkpoint at env step 150" in err and "there are: 100, 200" in err
    assert main([*base, "--checkpoint", str(planning_run / "nowhere")]) == 2
    assert "not an env step, nor a checkpoint dir" in capsys.readouterr().err


def test_the_curve_evaluates_actor_and_planner_from_each_checkpoint(planning_run, tmp_path, capsys):
    bench = load_benchmark("planning")
    assert bench.spread([1, 2, 3, 4, 5, 6, 7], 3) == [1, 4, 7] and bench.spread([1, 2], 6) == [1, 2]
    runs = bench.curve([planning_run], points=0, episodes=1, envs=1)
    out = capsys.readouterr().out
    points = runs[str(planning_run)]
    assert [p["step"] for p in points] == [100, 200]
    for p in points:
        assert len(p["actor_returns"]) == len(p["mpc_returns"]) == 1
        assert p["mpc/ms_per_call"] > 0 and p["mpc_ms_per_step"] > 0 and p["actor_ms_per_step"] > 0
    assert "actor return" in out and "mpc return" in out
    assert f"{100:>9,}" in out and f"{200:>9,}" in out
    bench.write_curve(tmp_path / "curve.json", {**runs, "again": points}, episodes=1)
    written = json.loads((tmp_path / "curve.json").read_text())
    assert [p["step"] for p in written["mean"]] == [100, 200]  # the mean over the two "runs"
    assert written["mean"][0]["mpc_return"] == points[0]["mpc_return"]
