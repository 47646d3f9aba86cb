"""The command line's shape: one module per command, the jemalloc restart only for the
``dreamrl`` command, and libraries (diagnostics, report) that parse no arguments."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dreamrl.cli as cli
from dreamrl import rundir
from dreamrl.cli.common import checkpoint_env_steps, output_run_dir
from dreamrl.cli.whatif import branch_actions
from dreamrl.config import ConfigError
from dreamrl.diagnostics.record import DIAG_STREAM, diagnostic_seeds
from dreamrl.envs import env_seed
from dreamrl.run import allocator
from dreamrl.spaces import Space

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dreamrl"


def test_every_command_is_a_module_with_add_parser_and_run():
    modules = {p.stem for p in (PACKAGE / "cli").glob("*.py")} - {"__init__", "common"}
    assert {m.__name__.rsplit(".", 1)[-1] for m in cli.COMMANDS.values()} == modules
    for name, module in cli.COMMANDS.items():
        assert callable(module.add_parser) and callable(module.run), name
        sub = argparse.ArgumentParser().add_subparsers(dest="command")
        assert module.add_parser(sub).prog.endswith(name)


def test_main_never_restarts_the_process(monkeypatch, capsys):
    def restart() -> None:
        raise AssertionError("main() restarted the process")

    monkeypatch.setattr(allocator, "exec_with_jemalloc", restart)
    assert cli.main(["config", "--preset", "debug"]) == 0
    monkeypatch.setattr(sys, "argv", ["dreamrl", "config", "--preset", "debug"])
    assert cli.main() == 0  # argv None reads sys.argv, still without a restart
    assert "run.steps = " in capsys.readouterr().out


def test_console_restarts_first_then_exits_with_mains_status(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(allocator, "exec_with_jemalloc", lambda: calls.append("restart"))
    monkeypatch.setattr(cli, "main", lambda argv=None: calls.append("main") or 3)
    with pytest.raises(SystemExit) as exit_:
        cli.console()
    assert exit_.value.code == 3 and calls == ["restart", "main"]


def test_python_m_dreamrl_help_lists_every_command():
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for name in cli.COMMANDS:
        assert name in proc.stdout


def test_libraries_parse_no_arguments():
    for folder in ("diagnostics", "report"):
        for path in (PACKAGE / folder).glob("*.py"):
            assert "argparse" not in path.read_text(), path


def test_the_cli_spells_no_run_dir_file_name():
    names = [
        rundir.CONFIG,
        rundir.METRICS,
        rundir.REPORT,
        rundir.AGENT_META,
        rundir.AGENT_WEIGHTS,
        rundir.LOOP_STATE,
        rundir.LOOP_TENSORS,
        rundir.MANIFEST,
    ]
    for path in (PACKAGE / "cli").glob("*.py"):
        code = path.read_text()
        for name in names:
            assert f'"{name}"' not in code and f"/ {name}" not in code, (path, name)


def test_results_go_to_the_run_dir_of_a_checkpoint_or_need_out(tmp_path):
    run = tmp_path / "run"
    ckpt = rundir.RunDir(run).checkpoint(300)
    ckpt.mkdir(parents=True)
    (ckpt / rundir.AGENT_META).write_text("{}")
    (run / rundir.CONFIG).write_text("{}")
    assert output_run_dir(run).path == run
    assert output_run_dir(ckpt).path == run
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / rundir.AGENT_META).write_text("{}")
    with pytest.raises(ConfigError, match="--out"):
        output_run_dir(lone)
    assert checkpoint_env_steps(lone) is None
    (lone / rundir.LOOP_STATE).write_text('{"env_steps": 120}')
    assert checkpoint_env_steps(lone) == 120


def test_diagnostic_seeds_default_to_the_runs_seed():
    assert diagnostic_seeds(5, 0, 2) == [env_seed(5, DIAG_STREAM, 0), env_seed(5, DIAG_STREAM, 1)]
    assert diagnostic_seeds(5, 9, 1) == [env_seed(9, DIAG_STREAM, 0)]


def test_branch_actions_as_the_flags_ask():
    rng = np.random.default_rng(0)
    discrete = Space("int64", (), classes=3)
    box = Space("float32", (2,))
    actions, text = branch_actions(discrete, 4, rng, constant="1")
    assert actions.tolist() == [1, 1, 1, 1] and text == "constant action 1"
    actions, text = branch_actions(box, 3, rng, actions="0.5,-0.5")
    assert actions.tolist() == [[0.5, 0.5], [-0.5, -0.5], [-0.5, -0.5]] and text == "actions 0.5,-0.5"
    assert branch_actions(box, 3, rng, policy=True) == ("policy", "the agent's policy")
    actions, text = branch_actions(discrete, 5, rng)
    assert actions.shape == (5,) and 0 <= actions.min() <= actions.max() < 3 and text == "random actions"
    actions, _ = branch_actions(box, 5, rng)
    assert actions.shape == (5, 2) and actions.dtype == np.float32 and np.abs(actions).max() <= 1


def test_a_user_who_names_no_size_is_told_what_the_choice_means_and_what_is_faster():
    import torch

    from dreamrl.cli.train import explain_choices
    from dreamrl.config import build_config

    size = "size200m" if torch.cuda.is_available() else "size1m"
    lines = explain_choices(build_config([], {"task": "CartPole-v1"}), size)
    text = "\n".join(lines)
    assert lines[0].startswith(f"No size preset given: using {size}")
    assert "learning rate (4e-05)" in text and "train ratio 32" in text
    assert "--preset demo learns CartPole-v1" in text and "docs/learning.md" in text
    assert "run.steps is 10,000,000,000" in text
    quick = explain_choices(build_config(["quick"], {"task": "CartPole-v1", "run.steps": 1000}), size)
    assert len(quick) == 1  # the learning rate and the step budget were chosen: nothing to explain
