"""The command line end to end, as a user runs it: train, resume, eval --json, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dreamrl.agent import Agent
from dreamrl.run.allocator import find_jemalloc
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.logging import read_metrics
from dreamrl.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
# One torch thread: on a busy 2-core machine two threads per run contend badly.
FAST = ["run.eval_every=0", "run.eval_eps=2", "run.log_every=0", "compute.threads=1"]


def dreamrl(*args: str, check: bool = True, **environ: str | None) -> subprocess.CompletedProcess:
    """Run the command; ``environ`` sets variables for it (None: unset)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key, value in environ.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dreamrl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def train_args(logdir: Path, steps: int) -> list[str]:
    """The debug CartPole training command for ``steps`` env steps."""
    return [
        "train",
        "--env",
        "CartPole-v1",
        "--logdir",
        str(logdir),
        "--preset",
        "debug",
        "--steps",
        str(steps),
        "--no-progress",
        *FAST,
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cartpole_run) -> Path:
    """``dreamrl train`` of 300 debug steps on CartPole-v1 (tests/conftest.py), copied: the
    tests here write into it."""
    logdir = tmp_path_factory.mktemp("run") / "cartpole"
    shutil.copytree(cartpole_run, logdir)
    return logdir


def test_train_writes_the_run_dir(trained):
    assert (trained / "config.json").is_file()
    assert json.loads((trained / "config.json").read_text())["task"] == "CartPole-v1"
    records = read_metrics(trained)
    assert records and all("step" in r for r in records)
    assert any("loss/dyn" in r for r in records)
    assert any("eval/return" in r for r in records)  # the final evaluation
    assert list_checkpoints(trained)[-1][0] == 300
    assert any((trained / "replay").iterdir())
    assert any((trained / "tb").iterdir())


def test_eval_json_last_line(trained):
    proc = dreamrl("eval", "--logdir", str(trained), "--episodes", "3", "--json")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 3 and len(result["returns"]) == 3
    assert result["env_steps"] == 300
    assert result["mean_return"] == pytest.approx(sum(result["returns"]) / 3)
    assert result["std_return"] >= 0
    saved = RunDir(trained).eval_result(300)
    assert f"Saved: {saved}" in proc.stdout
    assert json.loads(saved.read_text())["returns"] == result["returns"]


def test_rerun_resumes_where_it_stopped(trained, tmp_path):
    import shutil

    logdir = tmp_path / "resumed"
    shutil.copytree(trained, logdir)
    proc = dreamrl(*train_args(logdir, 400))
    assert "Resuming from ckpt-000000000300" in proc.stdout
    assert list_checkpoints(logdir)[-1][0] == 400
    agent = Agent.load(logdir)
    assert agent.updates > Agent.load(trained).updates


def test_resume_with_a_changed_model_is_refused(trained):
    proc = dreamrl(
        "train",
        "--env",
        "CartPole-v1",
        "--logdir",
        str(trained),
        "--preset",
        "debug",
        "--steps",
        "400",
        "agent.dyn.rssm.deter=128",
        check=False,
    )
    assert proc.returncode == 2
    assert "agent.dyn.rssm.deter: 64 -> 128" in proc.stderr


def test_python_api_steps_a_gymnasium_env(trained):
    import gymnasium

    agent = Agent.load(trained)
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=7)
    action, state = agent.act(obs)
    for _ in range(5):
        assert action in (0, 1)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
        action, state = agent.act(obs, state)


@pytest.mark.parametrize(
    "args, message",
    [
        (["run.envz=2"], "run.envz: unknown config key"),
        (["run.envs=abc"], "run.envs: expected an integer"),
        (["run.train_ratio=-1"], "run.train_ratio"),
        (["agent.dyn.rssm.deter=100"], "agent.dyn.rssm.deter"),
        (["--preset", "size3m"], "unknown preset"),
    ],
)
def test_config_errors_exit_2_naming_the_key(tmp_path, args, message):
    proc = dreamrl("train", "--env", "CartPole-v1", "--logdir", str(tmp_path / "x"), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_env_exits_2(tmp_path):
    proc = dreamrl("train", "--env", "NoSuchEnv-v9", "--logdir", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2
    assert "NoSuchEnv-v9" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["train", "bench"])
def test_a_mistyped_env_is_refused_before_torch_is_imported(tmp_path, command):
    """The id is checked first, so the refusal takes a fraction of a second (it took 10 s
    on a 2-core machine when the env was first made after torch and the config)."""
    argv = [command, "--env", "CartPole-v9"]
    argv += ["--logdir", str(tmp_path / "x")] if command == "train" else []
    code = (
        "import sys\n"
        "from dreamrl.cli import main\n"
        f"status = main({argv!r})\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr
    # gymnasium's own hint comes with it: the versions there are.
    assert "--env CartPole-v9: gymnasium cannot make this environment" in proc.stderr
    assert "v1" in proc.stderr and "Traceback" not in proc.stderr


def test_module_env_id_and_pixels(tmp_path):
    """`module:Env-v0` imports the module first; env.pixels=true trains on its render."""
    logdir = tmp_path / "tiny"
    proc = dreamrl(
        "train",
        "--env",
        "fixtures.tiny_env:TinyLine-v0",
        "--logdir",
        str(logdir),
        "--preset",
        "debug",
        "--steps",
        "120",
        "env.pixels=true",
        "--no-progress",
        *FAST,
    )
    assert "image uint8[64, 64, 3]" in proc.stdout
    agent = Agent.load(logdir)
    assert agent.obs_space["image"].shape == (64, 64, 3)


def test_diagnose_and_whatif_write_into_the_run_dir(trained, tmp_path):
    import shutil

    logdir = tmp_path / "diag"
    shutil.copytree(trained, logdir)
    proc = dreamrl(
        "diagnose", "--logdir", str(logdir), "--episodes", "4", "--context", "4", "--horizon", "3", "--json"
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["horizon"] == 3 and len(result["kl"]) == 3
    assert "Weakest" in result["summary"] or "No component" in result["summary"]
    assert (logdir / "diagnostics" / result["images"]["openloop"]).is_file()
    proc = dreamrl(
        "whatif", "--logdir", str(logdir), "--t", "2", "--horizon", "3", "--constant", "1", "--json"
    )
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["t"] == 2 and record["actions"] == "constant action 1"
    assert len(record["counterfactual"]["rewards"]) == record["horizon"] <= 3
    assert (logdir / "whatif" / record["image"]).is_file()
    proc = dreamrl("report", "--logdir", str(logdir))
    html = (logdir / "report.html").read_text()
    assert "constant action 1" in html and "openloop" in html


def test_diagnose_outside_a_run_dir_needs_out(trained, tmp_path):
    import shutil

    from dreamrl.run.checkpoint import list_checkpoints

    ckpt = tmp_path / "ckpt"
    shutil.copytree(list_checkpoints(trained)[-1][1], ckpt)
    proc = dreamrl("diagnose", "--logdir", str(ckpt), check=False)
    assert proc.returncode == 2 and "--out" in proc.stderr


def bench_json(*args: str, **environ: str | None) -> tuple[dict, subprocess.CompletedProcess]:
    """``dreamrl bench --json`` on CartPole with the debug preset and one thread."""
    proc = dreamrl(
        "bench", "--env", "CartPole-v1", "--preset", "debug", "--json", "compute.threads=1", *args, **environ
    )
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc


def test_bench_prints_its_figures_as_json():
    result, proc = bench_json("--train-steps", "2", DREAMRL_MALLOC=None)
    for key in (
        "train_steps_per_s",
        "gflop_per_step",
        "achieved_gflops",
        "peak_gflops",
        "params",
        "peak_rss_mb",
        "policy_step_ms",
        "replay_sample_ms",
        "env_steps_per_s",
    ):
        assert result[key] > 0, key
    assert result["replay_bytes_per_obs_byte"] > 1  # actions, rewards and flags come on top
    assert result["achieved_gflops"] == pytest.approx(result["gflop_per_step"] * result["train_steps_per_s"])
    assert "GFLOP/s" in proc.stdout
    # The default: the command restarted itself with jemalloc preloaded where it is installed
    # (make installs it).
    assert result["malloc"] == ("jemalloc" if find_jemalloc() else "glibc")


def test_bench_in_bfloat16_sets_its_figures_against_a_bfloat16_peak():
    result, proc = bench_json("--train-steps", "1", "compute.precision=bfloat16", DREAMRL_MALLOC="glibc")
    assert result["malloc"] == "glibc"  # asked for: no restart
    assert result["precision"] == "bfloat16"
    assert result["peak_gflops"] > 0 and result["peak_gflops_float32"] > 0
    assert result["peak_gflops"] != result["peak_gflops_float32"]  # two products were measured
    assert result["peak_fraction"] == pytest.approx(result["achieved_gflops"] / result["peak_gflops"])
    assert "bfloat16 matmul peak" in proc.stdout
