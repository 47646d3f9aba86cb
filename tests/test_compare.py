"""``dreamrl compare``: hand-computed thresholds and intervals on fake run dirs, resuming
only what an interrupted comparison left undone, agents named by presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dreamrl.cli import main
from dreamrl.compare import compare, compare_logdirs, stats
from dreamrl.compare.runs import agent_of, check_agents, plan, status, train_in_process
from dreamrl.config import ConfigError, build_config, to_dict
from dreamrl.rundir import RunDir

# Agent "dreamer", 3 seeds: evaluation returns at env steps 1000, 2000, 3000.
DREAMER = {0: [100, 120, 150], 1: [50, 100, 150], 2: [10, 50, 150]}
# Agent "horizon50", 2 seeds: seed 0 evaluated at 1000, 2000, 4000 (reaches 100 at 4000),
# seed 1 at 1000, 2000, 3000 and never reaches 100.
H50_STEPS = {0: [1000, 2000, 4000], 1: [1000, 2000, 3000]}
H50 = {0: [10, 50, 120], 1: [20, 40, 80]}


def fake_run(run_dir: Path, presets: list[str], seed: int, steps: list[int], returns: list[float]) -> Path:
    """A run dir written by hand: its config and one eval record per evaluation, 10 ms a step."""
    run_dir.mkdir(parents=True)
    config = build_config(presets, {"task": "CartPole-v1", "seed": seed})
    RunDir(run_dir).config.write_text(json.dumps(to_dict(config)))
    lines = [
        json.dumps({"step": s, "eval/return": r, "eval/returns": [r], "time/elapsed": s / 100})
        for s, r in zip(steps, returns)
    ]
    RunDir(run_dir).metrics.write_text("\n".join(lines) + "\n")
    return run_dir


@pytest.fixture
def fake_runs(tmp_path) -> list[Path]:
    runs = [fake_run(tmp_path / f"d{s}", ["debug"], s, [1000, 2000, 3000], r) for s, r in DREAMER.items()]
    runs += [fake_run(tmp_path / f"h{s}", ["debug", "horizon50"], s, H50_STEPS[s], H50[s]) for s in H50]
    return runs


def test_two_fake_agents_give_the_hand_computed_table(fake_runs, tmp_path):
    summary = compare_logdirs(fake_runs, tmp_path / "cmp", threshold=100.0)
    dreamer, h50 = summary["agents"]["dreamer"], summary["agents"]["horizon50"]
    assert [r["steps_to_threshold"] for r in dreamer["runs"]] == [1000, 2000, 3000]
    # Medians of 3 resampled seeds: 1000 with probability 7/27 > 2.5%, 3000 likewise.
    assert dreamer["threshold"] == {
        "median": 2000.0,
        "ci": [1000.0, 3000.0],
        "reached": 3,
        "seeds": 3,
        "per_seed": [1000, 2000, 3000],
    }
    # One seed of two never reached it: the median is "never", the interval [4000, never].
    assert h50["threshold"]["median"] is None and h50["threshold"]["ci"] == [4000.0, None]
    assert h50["threshold"]["reached"] == 1
    # Final scores 150, 150, 150: a degenerate interval; 120 and 80: means of resamplings
    # are 80, 100 or 120, with probability 1/4, 1/2, 1/4.
    assert dreamer["final"]["mean"] == 150 and dreamer["final"]["mean_ci"] == [150, 150]
    assert h50["final"]["mean"] == 100 and h50["final"]["mean_ci"] == [80, 120]
    assert h50["final"]["iqm"] == 100  # fewer than 4 seeds: nothing is trimmed
    curve = dreamer["curve"]
    assert curve["steps"] == [1000, 2000, 3000]
    assert curve["mean"] == pytest.approx([160 / 3, 270 / 3, 150])
    assert curve["low"][0] == pytest.approx(10) and curve["high"][0] == pytest.approx(100)
    assert curve["low"][2] == curve["high"][2] == 150
    # horizon50 on the union of its seeds' steps; seed 0 interpolated at 3000 (85), seed 1
    # ended at 3000 and says nothing of 4000.
    assert h50["curve"]["steps"] == [1000, 2000, 3000, 4000]
    assert h50["curve"]["mean"] == pytest.approx([15, 45, 82.5, 120])
    assert h50["curve"]["seeds"] == [2, 2, 2, 1]
    assert dreamer["cost"]["wall_s_per_env_step"] == pytest.approx(0.01)
    assert dreamer["cost"]["gflop_per_env_step"] is None  # no checkpoint to count on
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["agents"]["horizon50"]["threshold"]["ci"] == [4000, None]
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Steps to threshold" in page and "not reached" in page and "data:image/png;base64" in page


def test_a_baseline_is_labelled_with_no_world_model(fake_runs, tmp_path):
    ppo = fake_run(tmp_path / "p0", ["ppo"], 0, [1000, 2000], [20, 30])
    agents = compare_logdirs([*fake_runs, ppo], tmp_path / "cmp", threshold=100.0)["agents"]
    assert agents["dreamer"]["world_model"] == "rssm"
    assert agents["ppo"]["kind"] == "ppo" and agents["ppo"]["world_model"] is None


def test_curve_band_by_hand():
    """Two seeds, one grid: the resampled means are a, (a+b)/2 or b."""
    band = stats.curve_band([([0, 10], [0.0, 2.0]), ([0, 10], [4.0, 6.0])], reps=4000)
    assert band.mean.tolist() == [2.0, 4.0]
    assert band.low.tolist() == [0.0, 2.0] and band.high.tolist() == [4.0, 6.0]
    same = stats.curve_band([([0, 10], [1.0, 3.0])])
    assert same.low.tolist() == same.high.tolist() == [1.0, 3.0]  # one seed: no width


def test_steps_to_threshold():
    assert stats.steps_to_threshold([3, 1, 2], [5.0, 0.0, 4.0], 4.0) == 2
    assert stats.steps_to_threshold([1, 2], [0.0, float("nan")], 1.0) is None


def test_runs_are_grouped_by_agent_from_their_config():
    assert agent_of(build_config(["debug"], {})) == "dreamer"
    assert agent_of(build_config(["demo", "kl_weak", "horizon50"], {})) == "kl_weak+horizon50"


def test_agents_must_be_presets():
    check_agents(["dreamer", "actor_real", "horizon50+no_continue"])
    with pytest.raises(ConfigError, match=r"nosuch is not an agent.*actor_real"):
        check_agents(["dreamer", "nosuch"])
    with pytest.raises(ConfigError, match="twice"):
        check_agents(["dreamer", "dreamer"])


def test_cli_refuses_an_unknown_env_before_training_anything(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--env", "NoSuchEnv-v9", "--agents", "dreamer", "--out", str(out), "--threshold", "1"]
    assert main(argv) == 2
    assert "--env NoSuchEnv-v9: gymnasium cannot make this environment" in capsys.readouterr().err
    assert not out.exists()


def test_dry_run_estimates_the_time_left_at_each_agents_pace(tmp_path):
    from dreamrl.compare.runs import describe_plan
    from dreamrl.run.checkpoint import save_checkpoint

    from fixtures.fake_trainer import _Saved

    specs = plan(tmp_path, "CartPole-v1", ["dreamer", "horizon50"], 2, 2000, ["debug"])
    first = specs[0]  # dreamer seed 0: 1,000 env steps in 600 s on its clock, checkpointed there
    first.run_dir.mkdir(parents=True)
    RunDir(first.run_dir).config.write_text(json.dumps(to_dict(first.config)))
    records = [{"step": 500, "time/elapsed": 200.0}, {"step": 1000, "time/elapsed": 600.0}]
    RunDir(first.run_dir).metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    save_checkpoint(first.run_dir, 1000, _Saved(), {"env_steps": 1000}, keep=2)
    lines = describe_plan(specs[:2])
    # 0.6 s an env step: 1,000 left of seed 0 is 10 min, 2,000 of seed 1 is 20.
    pace = "at this agent's pace"
    assert lines == [
        f"dreamer seed 0: partial: 1,000 of 2,000 env steps, about 10 min {pace}  {first.run_dir}",
        f"dreamer seed 1: new: 2,000 env steps, about 20 min {pace}  {specs[1].run_dir}",
        "2 runs: 0 done, 2 to train, about 30 min one after another",
    ]
    lines = describe_plan(specs)  # horizon50 has no clock yet: no estimate for it or the total
    assert lines[2] == f"horizon50 seed 0: new: 2,000 env steps  {specs[2].run_dir}"
    assert lines[-1] == "4 runs: 0 done, 4 to train (no time estimate: an agent has no run with a clock yet)"


def test_dry_run_does_not_apply_to_logdirs(fake_runs, tmp_path, capsys):
    argv = ["compare", "--logdirs", *map(str, fake_runs), "--out", str(tmp_path / "cmp"), "--dry-run"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--dry-run shows the runs a comparison would train; --logdirs trains none" in err
    assert not (tmp_path / "cmp").exists()


def test_cli_refuses_an_unknown_agent(tmp_path, capsys):
    code = main(["compare", "--env", "CartPole-v1", "--agents", "dreamer,ppo2", "--out", str(tmp_path)])
    assert code == 2 and "ppo2 is not an agent" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_an_interrupted_compare_resumes_only_what_is_missing(tmp_path, monkeypatch, capsys):
    from dreamrl import agents

    from fixtures import fake_trainer

    monkeypatch.setitem(agents.TRAINERS, "fake", "fixtures.fake_trainer:train")
    monkeypatch.setattr(fake_trainer, "CALLS", [])
    monkeypatch.setattr(fake_trainer, "INTERRUPT_SEED", 0)
    monkeypatch.setattr(fake_trainer, "INTERRUPT_PRESET", "horizon50")
    out = tmp_path / "cmp"
    args = dict(env="CartPole-v1", agents=["dreamer", "horizon50"], seeds=2, steps=200)
    kwargs = dict(
        presets=["debug"], overrides={"agent.kind": "fake"}, threshold=100.0, progress=False, reps=200
    )
    table = out / "compare.json"
    runs_in_table: list[int | None] = []  # how many runs compare.json held as each run began

    def train(spec, progress, stream):
        held = json.loads(table.read_text())["agents"] if table.exists() else None
        runs_in_table.append(None if held is None else sum(len(a["runs"]) for a in held.values()))
        train_in_process(spec, progress, stream)

    with pytest.raises(KeyboardInterrupt):
        compare(out, **args, **kwargs, train=train)
    assert [
        (out / "dreamer" / "seed0", 0),
        (out / "dreamer" / "seed1", 0),
        (out / "horizon50" / "seed0", 0),
    ] == fake_trainer.CALLS
    # Written as each run ended, and once more on the interrupt with the half-done run in it.
    assert runs_in_table == [None, 1, 2]
    held = json.loads(table.read_text())
    assert held["agents"]["dreamer"]["threshold"]["reached"] == 2
    assert [r["env_steps"] for r in held["agents"]["horizon50"]["runs"]] == [100]
    assert (out / "compare.html").is_file()
    assert f"interrupted: {table} holds the runs so far" in capsys.readouterr().out

    argv = ["compare", "--env", "CartPole-v1", "--agents", "dreamer,horizon50", "--seeds", "2"]
    argv += ["--steps", "200", "--preset", "debug", "--out", str(out), "--dry-run", "agent.kind=fake"]
    assert main(argv) == 0
    pace = "at this agent's pace"
    assert capsys.readouterr().out.splitlines() == [
        f"dreamer seed 0: done (200 env steps)  {out / 'dreamer' / 'seed0'}",
        f"dreamer seed 1: done (200 env steps)  {out / 'dreamer' / 'seed1'}",
        # The fake runs' clocks say 1 ms an env step: well under a minute left.
        f"horizon50 seed 0: partial: 100 of 200 env steps, about 0 min {pace}  {out / 'horizon50' / 'seed0'}",
        f"horizon50 seed 1: new: 200 env steps, about 0 min {pace}  {out / 'horizon50' / 'seed1'}",
        "4 runs: 2 done, 2 to train, about 0 min one after another",
    ]
    assert len(fake_trainer.CALLS) == 3  # the dry run trained nothing
    specs = plan(out, "CartPole-v1", ["dreamer", "horizon50"], 2, 200, ["debug"], {"agent.kind": "fake"})
    assert [status(s) for s in specs] == ["done", "done", "partial", "new"]

    fake_trainer.CALLS.clear()
    monkeypatch.setattr(fake_trainer, "INTERRUPT_SEED", None)
    summary = compare(out, **args, **kwargs)
    # Only the interrupted run (from its checkpoint at 100 steps) and the one never started.
    assert [(out / "horizon50" / "seed0", 100), (out / "horizon50" / "seed1", 0)] == fake_trainer.CALLS
    assert [status(s) for s in specs] == ["done"] * 4
    assert summary["agents"]["dreamer"]["threshold"]["reached"] == 2
    assert summary["agents"]["horizon50"]["final"]["mean"] == pytest.approx(100.5)
    fake_trainer.CALLS.clear()
    compare(out, **args, **kwargs)  # everything done: nothing trains
    assert fake_trainer.CALLS == []


def test_seed_order_trains_every_agents_first_seed_first(tmp_path):
    agents = ["dreamer", "horizon50", "no_continue"]
    by_agent = plan(tmp_path, "CartPole-v1", agents, 2, 200, ["debug"])
    by_seed = plan(tmp_path, "CartPole-v1", agents, 2, 200, ["debug"], order="seeds")
    assert [(s.agent, s.seed) for s in by_agent] == [
        ("dreamer", 0),
        ("dreamer", 1),
        ("horizon50", 0),
        ("horizon50", 1),
        ("no_continue", 0),
        ("no_continue", 1),
    ]
    assert [(s.agent, s.seed) for s in by_seed] == [
        ("dreamer", 0),
        ("horizon50", 0),
        ("no_continue", 0),
        ("dreamer", 1),
        ("horizon50", 1),
        ("no_continue", 1),
    ]

    # The same runs, only in another order: the same dirs, commands and configs.
    def runs(specs):
        return sorted((str(s.run_dir), s.args, json.dumps(to_dict(s.config))) for s in specs)

    assert runs(by_seed) == runs(by_agent)
    with pytest.raises(ConfigError, match="--order: 'random' is not an order; orders are agents, seeds"):
        plan(tmp_path, "CartPole-v1", agents, 2, 200, ["debug"], order="random")


def test_a_compare_trains_debug_runs_end_to_end(tmp_path, capsys, monkeypatch):
    """Two real agents, one seed, a few hundred env steps each, through the CLI."""
    from dreamrl.compare import costs

    counted: list[Path] = []

    def count(run_dir: Path) -> dict[str, float]:
        counted.append(run_dir)
        return real_count(run_dir)

    real_count = costs.counted_gflop
    monkeypatch.setattr(costs, "counted_gflop", count)
    out = tmp_path / "cmp"
    argv = ["compare", "--env", "CartPole-v1", "--agents", "dreamer,actor_real", "--seeds", "1"]
    argv += ["--steps", "120", "--preset", "debug", "--out", str(out), "--no-progress", "--reps", "200"]
    argv += ["--order", "seeds"]
    argv += ["run.eval_every=60", "run.eval_eps=1", "run.log_every=0", "compute.threads=1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "Written:" in text and "actor_real" in text
    summary = json.loads((out / "compare.json").read_text())
    assert summary["plan"]["order"] == "seeds"
    # The table was written three times (after each run, then at the end); each run's
    # FLOPs were counted once.
    assert counted == [out / "dreamer" / "seed0", out / "actor_real" / "seed0"]
    for name in ("dreamer", "actor_real"):
        a = summary["agents"][name]
        assert a["runs"][0]["env_steps"] >= 120 and a["curve"]["steps"]
        assert a["cost"]["gflop_per_env_step"] > 0 and a["cost"]["wall_s_per_env_step"] > 0
    assert summary["agents"]["actor_real"]["presets"][-1] == "actor_real"
    assert np.isfinite(summary["agents"]["dreamer"]["final"]["mean"])


def test_a_parallel_run_gets_the_same_config_through_dreamrl_train(tmp_path):
    """The subprocess of a --parallel run builds the config the plan built, but its threads."""
    from dreamrl.cli import parser
    from dreamrl.cli.common import resolve
    from dreamrl.compare.runs import train_command
    from dreamrl.config import diff

    spec = plan(tmp_path, "CartPole-v1", ["horizon50+no_continue"], 2, 300, ["debug"], {"run.eval_eps": "2"})[
        1
    ]
    command = train_command(spec, threads=3)
    assert command[1:4] == ["-m", "dreamrl", "train"]
    args, extra = parser().parse_known_args(command[3:])
    args.overrides = list(args.overrides) + extra
    assert args.logdir == spec.run_dir == tmp_path / "horizon50+no_continue" / "seed1"
    assert diff(spec.config, resolve(args)) == {"compute.threads": (0, 3)}


def test_runs_on_two_kinds_of_machine_are_named_on_the_page_and_warned_of(fake_runs, tmp_path):
    from dreamrl.compare import describe

    def machine_line(run_dir: Path, isa: list[str]) -> None:
        line = {
            "time": "",
            "env_steps": 0,
            "machine": {"cpu": "AMD EPYC", "cores": 2, "isa": isa, "gpu": None},
        }
        RunDir(run_dir).machines.write_text(json.dumps(line) + "\n")

    for run_dir in fake_runs:
        machine_line(run_dir, ["avx2"])
    same = compare_logdirs(fake_runs, tmp_path / "same", threshold=100.0)
    assert same["wall_time_warnings"] == []
    assert same["agents"]["dreamer"]["cost"]["machines"] == ["AMD EPYC, 2 cores, avx2"]
    machine_line(fake_runs[-1], ["avx2", "avx512f"])  # horizon50 seed 1 on a faster machine
    mixed = compare_logdirs(fake_runs, tmp_path / "mixed", threshold=100.0)
    assert mixed["wall_time_warnings"] == [
        "wall times come from 2 kinds of machine: AMD EPYC, 2 cores, avx2; AMD EPYC, 2 cores, avx2/avx512f"
    ]
    assert describe(mixed)[-1] == f"warning: {mixed['wall_time_warnings'][0]}"
    page = (tmp_path / "mixed" / "compare.html").read_text()
    assert "Warning: wall times come from 2 kinds of machine" in page
    assert "AMD EPYC, 2 cores, avx2/avx512f" in page


def test_what_a_run_was_warned_of_at_start_is_in_the_table_and_on_the_page(fake_runs, tmp_path):
    from dreamrl.compare import describe

    summary = compare_logdirs(fake_runs, tmp_path / "cmp", threshold=100.0)
    assert summary["agents"]["dreamer"]["warnings"] == []
    (warned,) = summary["agents"]["horizon50"]["warnings"]
    assert "agent.imag_length=50" in warned
    assert f"warning: horizon50: {warned}" in describe(summary)
    assert "Settings warned about" in (tmp_path / "cmp" / "compare.html").read_text()
