"""Runs that survive: a real ``kill -9`` then the same command again continues exactly
as an uninterrupted run; saves are atomic; damaged files are detected and passed over;
nothing loads code; a changed env or model is refused before anything is written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dreamrl.agent import Agent
from dreamrl.run.checkpoint import (
    CheckpointError,
    list_checkpoints,
    save_checkpoint,
    verify_checkpoint,
)
from dreamrl.run.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# Training starts at about 130 env steps (the replay then fills a batch of 8x16); the
# kill -9 below lands between 150 and STEPS - 100, before or after the evaluation at 200.
STEPS = 400
TRAIN = [
    "train",
    "--env",
    "CartPole-v1",
    "--preset",
    "debug",
    "--steps",
    str(STEPS),
    "--no-progress",
    "run.eval_every=200",
    "run.eval_eps=2",
    "run.log_every=0",
    "run.save_every=1",
    "run.envs=2",
    "compute.threads=1",
]


def command(logdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dreamrl", *TRAIN, "--logdir", str(logdir), *extra]


def run(logdir: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(logdir, *extra), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def final_tensors(logdir: Path) -> dict[str, torch.Tensor]:
    step, path = list_checkpoints(logdir)[-1]
    assert step == STEPS
    return load_file(str(path / "agent.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("survival") / "whole"
    run(logdir)
    return logdir


def test_kill_9_then_the_same_command_continues_exactly(uninterrupted, tmp_path):
    logdir = tmp_path / "killed"
    proc = subprocess.Popen(command(logdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it once it has checkpointed part of the way
        ckpts = list_checkpoints(logdir)
        if ckpts and 150 <= ckpts[-1][0] < STEPS - 100:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = list_checkpoints(logdir)[-1][0]
    assert killed_at < STEPS
    resumed = run(logdir)
    assert f"Resuming from ckpt-{killed_at:012d}" in resumed.stdout or "Resuming from" in resumed.stdout
    assert "start fresh episodes" not in resumed.stdout  # CartPole replays exactly
    expected, got = final_tensors(uninterrupted), final_tensors(logdir)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    loops = [
        json.loads((p / "loop.json").read_text())
        for _, p in (list_checkpoints(uninterrupted)[-1:] + list_checkpoints(logdir)[-1:])
    ]
    for field in ("env_steps", "skipped_updates", "episodes", "eval_episodes", "env_episodes"):
        assert loops[0][field] == loops[1][field], field
    agents = [
        json.loads((p / "agent.json").read_text())
        for _, p in (list_checkpoints(uninterrupted)[-1:] + list_checkpoints(logdir)[-1:])
    ]
    assert agents[0]["updates"] == agents[1]["updates"] > 0  # the run's one update counter
    assert not list((logdir / "checkpoints").glob(".tmp-*"))
    # The killed session's records after its last checkpoint are gone: the log reads as
    # one run's, its evaluations those of the uninterrupted run.
    steps = [r["step"] for r in read_metrics(logdir)]
    assert steps == sorted(steps)
    assert eval_returns(logdir) == eval_returns(uninterrupted)


def eval_returns(logdir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["eval/return"]) for r in read_metrics(logdir) if "eval/return" in r]


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path):
    logdir = tmp_path / "terminated"
    # No periodic saves: a checkpoint past the start can only come from the signal.
    proc = subprocess.Popen(
        [*command(logdir), "run.save_every=3600", "run.eval_every=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT below prints where it hangs
    )
    metrics = logdir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        out, err = proc.communicate()
        pytest.fail(f"still running 120 s after SIGTERM; its stacks:\n{out}{err}")
    assert proc.returncode == 130, out + err  # the CLI's exit code for an interrupt
    assert "interrupted: saving a checkpoint" in out  # said even with --no-progress
    assert "SIGTERM: stopping after the current step" in err  # said when the signal came
    step, path = list_checkpoints(logdir)[-1]
    assert 0 < step < STEPS
    verify_checkpoint(path)
    resumed = run(logdir, "--steps", str(step + 150))  # on past the start of training
    assert f"Resuming from ckpt-{step:012d}" in resumed.stdout


def test_replay_after_the_checkpoint_is_discarded_and_said(uninterrupted, tmp_path):
    import shutil

    logdir = tmp_path / "extra"
    shutil.copytree(uninterrupted, logdir)
    ckpts = list_checkpoints(logdir)
    shutil.rmtree(ckpts[-1][1])  # the newest checkpoint is gone: its replay is now "after"
    kept = list_checkpoints(logdir)[-1][0]
    later = [r for r in read_metrics(logdir) if r["step"] > kept]
    assert later  # the records of the session after that checkpoint, among them an evaluation
    proc = run(logdir)
    assert "written after that checkpoint" in proc.stdout
    assert f"Resuming from ckpt-{kept:012d}" in proc.stdout
    assert f"Discarded {len(later)} metrics record(s) written after that checkpoint." in proc.stdout
    steps = [r["step"] for r in read_metrics(logdir)]
    assert steps == sorted(steps)  # written once each: the resumed session wrote them again
    assert eval_returns(logdir) == eval_returns(uninterrupted)
    # TensorBoard forgets them too: each evaluation is drawn once, though two event files hold it.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list((logdir / "tb").glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(logdir / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval/return")] == eval_returns(uninterrupted)


def test_exception_mid_save_keeps_the_previous_checkpoint(tmp_path):
    agent = Agent.load(next(iter(sorted((ROOT / "tests" / "fixtures").glob("checkpoint_v*")))))
    save_checkpoint(tmp_path, 100, agent, {"env_steps": 100}, keep=2)

    class Exploding:
        def save(self, directory):
            agent.save(directory)
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        save_checkpoint(tmp_path, 200, Exploding(), {"env_steps": 200}, keep=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [100]  # not pruned, still there
    verify_checkpoint(list_checkpoints(tmp_path)[-1][1])
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    Agent.load(tmp_path)


def test_disk_full_while_saving_names_the_checkpoint_kept(tmp_path, monkeypatch):
    import errno

    agent = Agent.load(next(iter(sorted((ROOT / "tests" / "fixtures").glob("checkpoint_v*")))))
    first = save_checkpoint(tmp_path, 100, agent, {"env_steps": 100}, keep=2)
    real_save = agent.save

    def full(directory):
        real_save(directory)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(agent, "save", full)
    with pytest.raises(CheckpointError, match=f"disk full.*{first.name} is intact"):
        save_checkpoint(tmp_path, 200, agent, {"env_steps": 200}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [100]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_named_and_resume_falls_back(uninterrupted, tmp_path, damage):
    import shutil

    logdir = tmp_path / "damaged"
    shutil.copytree(uninterrupted, logdir)
    newest = list_checkpoints(logdir)[-1][1]
    weights = newest / "agent.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    else:
        mid = len(data) // 2
        weights.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 10]) + data[mid + 10 :])
    with pytest.raises(CheckpointError, match=r"agent\.safetensors"):
        verify_checkpoint(newest)
    with pytest.raises(CheckpointError, match=r"agent\.safetensors"):
        Agent.load(newest)
    older = list_checkpoints(logdir)[-2]
    assert Agent.load(logdir).updates == json.loads((older[1] / "agent.json").read_text())["updates"]
    proc = run(logdir, "--steps", str(STEPS + 20))
    assert "skipping a damaged checkpoint" in proc.stdout and "agent.safetensors" in proc.stdout
    assert f"Resuming from ckpt-{older[0]:012d}" in proc.stdout


def test_damaged_replay_chunk_is_skipped_and_counted(uninterrupted, tmp_path):
    import shutil

    logdir = tmp_path / "chunk"
    shutil.copytree(uninterrupted, logdir)
    chunks = sorted((logdir / "replay").glob("000-*.npz"))
    chunks[-1].write_bytes(b"not a zip file at all")
    proc = run(logdir, "--steps", str(STEPS + 20))
    assert "skipped a damaged replay chunk" in proc.stdout and chunks[-1].name in proc.stdout


def test_loading_refuses_a_planted_pickle(tmp_path):
    """A pickle that would run code on load: every load path must refuse it."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = pickle.dumps(Payload())
    (tmp_path / "agent.safetensors").write_bytes(evil)
    with pytest.raises(Exception):  # noqa: B017 - safetensors rejects the header
        load_file(str(tmp_path / "agent.safetensors"))
    np_file = tmp_path / "000-000000000000-000010.npz"
    np.save(tmp_path / "obj.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    (tmp_path / "obj.npy").rename(np_file)
    with pytest.raises(ValueError, match="allow_pickle"):
        np.load(np_file, allow_pickle=False)
    assert not (tmp_path / "pwned").exists()


def test_no_load_path_can_unpickle():
    """pickle, torch.load without weights_only and allow_pickle=True appear nowhere."""
    offenders = []
    for path in (ROOT / "dreamrl").rglob("*.py"):
        text = path.read_text()
        for pattern in ("import pickle", "pickle.load", "allow_pickle=True", "torch.load("):
            if pattern in text:
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not offenders, offenders


def test_resume_with_another_env_is_refused_before_writing(uninterrupted, tmp_path):
    import shutil

    logdir = tmp_path / "other"
    shutil.copytree(uninterrupted, logdir)
    before = {p: p.stat().st_mtime_ns for p in logdir.rglob("*") if p.is_file()}
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", *TRAIN, "--logdir", str(logdir), "--env", "Acrobot-v1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "task: 'CartPole-v1' -> 'Acrobot-v1'" in proc.stderr
    after = {p: p.stat().st_mtime_ns for p in logdir.rglob("*") if p.is_file()}
    assert before == after


def test_env_whose_spaces_changed_is_refused_naming_fields(uninterrupted, tmp_path):
    from dreamrl.config import ConfigError
    from dreamrl.run.resume import check_spaces
    from dreamrl.spaces import Space

    ckpt = list_checkpoints(uninterrupted)[-1][1]
    with pytest.raises(ConfigError) as info:
        check_spaces(ckpt, {"vector": Space("float32", (6,))}, Space("int32", (), 3))
    message = str(info.value)
    assert "obs_space.vector: float32[4] -> float32[6]" in message
    assert "act_space: int32[], 2 classes -> int32[], 3 classes" in message


def test_fixture_checkpoint_from_format_1_still_loads():
    """tests/fixtures/checkpoint_v1 was saved by dreamrl 0.1.0: it must keep loading."""
    path = ROOT / "tests" / "fixtures" / "checkpoint_v1"
    verify_checkpoint(path)
    meta = json.loads((path / "agent.json").read_text())
    assert meta["format"] == 1 and meta["dreamrl"] == "0.1.0"
    agent = Agent.load(path)
    expected = json.loads((path / "expected.json").read_text())
    obs = {"vector": np.array(expected["obs"], np.float32), "is_first": np.array([True, True])}
    _, state = agent.policy(obs, None, deterministic=True)
    logits = agent.ac.actor(state.model.features()).logits
    np.testing.assert_allclose(
        state.model.deter[:, :8].detach().numpy(), expected["deter"], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(logits.detach().numpy(), expected["logits"], rtol=1e-5, atol=1e-6)
