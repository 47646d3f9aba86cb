"""Data-parallel training in two CPU processes (gloo, started by torchrun): an update of two
ranks is one process's update on both batches; a rank killed with ``kill -9`` stops the
job at once and the same command resumes it exactly; another number of ranks is refused
before anything is written; every rank's envs get seeds of their own."""

from __future__ import annotations

import json
import os
import shutil
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
from dreamrl.agents.dreamer import DreamerAgent
from dreamrl.envs import TRAIN_STREAM, episode_seed
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.distributed import Ranks, _buckets
from dreamrl.run.launch import failure_summary

from fixtures import ddp_update

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
STEPS = 240  # training starts at 128 env steps of the two ranks together (64 each hold a batch)
TRAIN = [
    "train",
    "--env",
    "CartPole-v1",
    "--preset",
    "debug",
    "--steps",
    str(STEPS),
    "--no-progress",
    "run.eval_every=120",
    "run.eval_eps=2",
    "run.log_every=0",
    "run.save_every=1",
    "compute.threads=1",
    "batch_size=4",
]


def environ() -> dict[str, str]:
    """The test process's environment, with the fixtures importable and one thread a rank."""
    paths = [str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}


def command(logdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dreamrl", *TRAIN, "--logdir", str(logdir), *extra]


def train(logdir: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(logdir, *extra), capture_output=True, text=True, timeout=600, env=environ())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """A whole 2-rank debug run of STEPS env steps."""
    logdir = tmp_path_factory.mktemp("ddp") / "whole"
    train(logdir, "--ranks", "2")
    return logdir


def newest(logdir: Path) -> Path:
    step, path = list_checkpoints(logdir)[-1]
    assert step == STEPS
    return path


def test_two_ranks_apply_the_update_of_one_process_on_both_batches(tmp_path):
    proc = subprocess.run(
        [*TORCHRUN, "-m", "fixtures.ddp_update", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:  # the replicas stay equal, bit for bit
        assert torch.equal(ranks[0][key], ranks[1][key]), key

    def one_process(data: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        with ddp_update.no_noise():
            agent = DreamerAgent(ddp_update.config(), ddp_update.OBS, ddp_update.ACT)
            assert agent.train_step(data).applied
        return ddp_update.outcome(agent)

    both = one_process(ddp_update.together(ddp_update.batch(0), ddp_update.batch(1)))
    assert both.keys() == ranks[0].keys()
    assert sum(k.startswith("grad.") for k in both) > 10
    for key, expected in both.items():  # gradients, AGC-clipped LaProp step, return percentiles
        torch.testing.assert_close(ranks[0][key], expected, rtol=1e-4, atol=1e-6, msg=key)
    alone = one_process(ddp_update.batch(0))  # what a rank would have done without the others
    assert any(not torch.allclose(alone[k], ranks[0][k]) for k in alone if k.startswith("grad."))


def test_kill_9_on_one_rank_stops_the_job_and_the_same_command_resumes_exactly(two_ranks, tmp_path):
    logdir = tmp_path / "killed"
    args = command(logdir, "--ranks", "2")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ())
    deadline = time.time() + 300
    while time.time() < deadline:  # once it has checkpointed part of the way
        ckpts = list_checkpoints(logdir)
        if ckpts and 100 <= ckpts[-1][0] < STEPS - 60:
            break
        time.sleep(0.05)
    victim = next(pid for pid in children(proc.pid) if rank_of(pid) == "1")
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)  # not a hang: torchrun stops rank 0 too
    assert proc.returncode == 1, err
    assert f"rank 1 (PID {victim}) was killed by SIGKILL" in err
    killed_at = list_checkpoints(logdir)[-1][0]
    assert killed_at < STEPS
    resumed = train(logdir, "--ranks", "2")
    assert "Resuming from" in resumed.stdout
    assert "start fresh episodes" not in resumed.stdout  # each rank replays its envs exactly
    for name in ("agent.safetensors", "loop-rank1.safetensors", "loop.safetensors"):
        expected, got = load_file(str(newest(two_ranks) / name)), load_file(str(newest(logdir) / name))
        assert expected.keys() == got.keys(), name
        for key in expected:
            assert torch.equal(expected[key], got[key]), f"{name}: {key}"
    for name in ("loop.json", "loop-rank1.json"):
        loops = [json.loads((newest(d) / name).read_text()) for d in (two_ranks, logdir)]
        for field in ("env_steps", "skipped_updates", "episodes", "env_episodes", "ranks"):
            assert loops[0][field] == loops[1][field], (name, field)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(x) for x in (task / "children").read_text().split()]
    return found


def rank_of(pid: int) -> str | None:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"RANK="):
            return item[5:].decode()
    return None


def test_a_checkpoint_of_two_ranks_loads_in_one_process_and_kept_the_train_ratio(two_ranks):
    agent = Agent.load(two_ranks)
    loop = json.loads((newest(two_ranks) / "loop.json").read_text())
    assert loop["ranks"] == 2 and loop["env_steps"] == STEPS
    # One update of both ranks (2 x 4 x 16 replayed steps) per 2 * 4 * 16 / 32 env steps.
    assert agent.updates + loop["skipped_updates"] == 1 + (STEPS - loop["train_start"]) * 32 // (2 * 4 * 16)
    assert agent.updates > 0
    metrics = [json.loads(line) for line in (two_ranks / "metrics.jsonl").read_text().splitlines()]
    assert any("dist/comm_ms" in m for m in metrics)


def test_another_number_of_ranks_is_refused_before_anything_is_written(two_ranks, cartpole_run, tmp_path):
    """1 process on a run of 2 ranks (before the lock file is touched), and 2 on a run of 1
    (before a process is started)."""
    logdir = tmp_path / "copy"
    shutil.copytree(two_ranks, logdir)
    before = {p: p.stat().st_mtime_ns for p in logdir.rglob("*") if p.is_file()}
    proc = subprocess.run(command(logdir), capture_output=True, text=True, timeout=300, env=environ())
    assert proc.returncode == 2, proc.stderr
    assert "was trained by 2 ranks" in proc.stderr and "this job has 1" in proc.stderr
    assert before == {p: p.stat().st_mtime_ns for p in logdir.rglob("*") if p.is_file()}
    one = tmp_path / "one"
    shutil.copytree(cartpole_run, one)
    before = {p: p.stat().st_mtime_ns for p in one.rglob("*") if p.is_file()}
    same = ["train", "--env", "CartPole-v1", "--logdir", str(one), "--preset", "debug", "--steps", "300"]
    same += ["run.eval_every=150", "run.eval_eps=2", "run.log_every=0", "compute.threads=1", "--ranks", "2"]
    proc = subprocess.run([sys.executable, "-m", "dreamrl", *same], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "was trained by 1 rank " in proc.stderr and "this job has 2" in proc.stderr
    assert before == {p: p.stat().st_mtime_ns for p in one.rglob("*") if p.is_file()}


def test_each_rank_steps_envs_of_its_own_seeds(two_ranks):
    first_envs = [Ranks(rank, 2).first_env(2) for rank in (0, 1)]
    seeds = {episode_seed(0, TRAIN_STREAM, first + i, 0) for first in first_envs for i in (0, 1)}
    assert len(seeds) == 4
    shards = [two_ranks / "replay", two_ranks / "replay" / "rank-1"]
    firsts = []
    for shard in shards:  # each env's first observation, in each rank's shard
        for stream in (0, 1):
            (chunk,) = shard.glob(f"{stream:03d}-000000000000-*.npz")
            with np.load(chunk) as data:
                firsts.append(tuple(data["vector"][0].tolist()))
    assert len(set(firsts)) == 4, firsts


def test_buckets_keep_order_and_dtype_within_the_limit():
    tensors = [torch.zeros(10), torch.zeros(10), torch.zeros(30), torch.zeros(5, dtype=torch.float64)]
    buckets = _buckets(tensors, limit=80)
    assert [[t.numel() for t in b] for b in buckets] == [[10, 10], [30], [5]]


def test_the_failure_summary_names_the_rank_that_died_first():
    class Failure:
        def __init__(self, pid: int, exitcode: int, message: object, error_file: str) -> None:
            self.pid, self.exitcode, self.message, self.error_file = pid, exitcode, message, error_file

        def signal_name(self) -> str:
            return signal.Signals(-self.exitcode).name

    lost = {"message": "RankLostError: all_reduce with the other ranks failed", "extraInfo": {}}
    line = failure_summary({0: Failure(10, 1, lost, "/tmp/e0"), 1: Failure(11, -9, "", "<N/A>")})
    assert line.startswith("rank 1 (PID 11) was killed by SIGKILL; rank 0 then stopped with it")
    error = {"message": "RunError: reward is not finite"}
    line = failure_summary({0: Failure(10, -15, "", "<N/A>"), 1: Failure(11, 1, error, "/tmp/e1")})
    assert line.startswith("rank 1 (PID 11) stopped with exit status 1 (RunError: reward is not finite)")
    assert "; rank 0 then stopped with it" in line
