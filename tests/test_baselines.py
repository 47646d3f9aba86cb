"""Model-free baselines (stable-baselines3's PPO, SAC, DQN) on dreamrl's envs, evaluation
and run dirs: the SB3 env wrapper, the settings, a run that `eval` and `report` read,
resume, a stop signal, and the action spaces each algorithm refuses."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.env_checker import check_env

from dreamrl.agents import load_agent, trainer_for
from dreamrl.agents.dreamer import DreamerAgent
from dreamrl.baselines.agent import BaselineAgent
from dreamrl.baselines.buffer import restore_buffer, save_buffer
from dreamrl.baselines.env import SB3Env
from dreamrl.baselines.observations import FrameStack
from dreamrl.baselines.train import train
from dreamrl.cli import main
from dreamrl.config import Config, ConfigError, build_config
from dreamrl.envs import make_env
from dreamrl.run.checkpoint import list_checkpoints, load_loop_state
from dreamrl.run.logging import read_metrics
from dreamrl.run.machine import read_sessions
from dreamrl.rundir import BASELINE_MODEL, BASELINE_REPLAY, RunDir
from dreamrl.spaces import Space

# A few hundred env steps, evaluated twice on 2 episodes, inline envs, one thread.
FAST = {
    "run.eval_eps": 2,
    "run.eval_envs": 2,
    "run.env_workers": "inline",
    "run.log_every": 0,
    "compute.threads": 1,
}


def config_for(preset: str, task: str, **overrides: object) -> Config:
    return build_config([preset], {"task": task, **FAST, **overrides})


def quiet_train(config: Config, run_dir: Path, **kwargs: object) -> object:
    return train(config, run_dir, out=io.StringIO(), progress=False, **kwargs)


# ---------------------------------------------------------------------------- settings


def test_presets_choose_the_kind_and_rl_zoos_settings_for_the_task():
    ppo = build_config(["ppo"], {"task": "CartPole-v1"})
    assert trainer_for(ppo) is train
    assert ppo.presets == ("ppo",)  # no model size put first: a baseline has no world model
    assert (ppo.agent.baseline.envs, ppo.agent.baseline.ppo.n_steps) == (8, 32)  # RL Zoo's
    assert ppo.agent.baseline.ppo.lr_schedule == "linear" and ppo.run.steps == 100_000
    assert not ppo.run.diagnose
    # What is named wins over the Zoo; without it (or from pixels) SB3's defaults apply.
    named = build_config(["ppo"], {"task": "CartPole-v1", "agent.baseline.ppo.n_steps": 64, "run.steps": 9})
    assert (named.agent.baseline.ppo.n_steps, named.run.steps, named.agent.baseline.envs) == (64, 9, 8)
    for overrides in ({"agent.baseline.zoo": False}, {"env.pixels": True}):
        plain = build_config(["ppo"], {"task": "CartPole-v1", **overrides})
        assert (plain.agent.baseline.envs, plain.agent.baseline.ppo.n_steps) == (1, 2048)
    assert build_config(["sac"], {"task": "Pendulum-v1"}).agent.baseline.sac.learning_rate == 1e-3
    dqn = build_config(["dqn"], {"task": "CartPole-v1"}).agent.baseline.dqn
    assert (dqn.train_freq, dqn.gradient_steps, dqn.net_arch) == (256, 128, (256, 256))
    assert build_config([], {"task": "CartPole-v1"}).presets == ("size1m",)  # Dreamer's as before


def test_hyperparameters_sb3_would_refuse_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"agent\.baseline\.sac\.ent_coef"):
        build_config(["sac"], {"agent.baseline.sac.ent_coef": "lots"})
    with pytest.raises(ConfigError, match=r"agent\.baseline\.ppo\.lr_schedule"):
        build_config(["ppo"], {"agent.baseline.ppo.lr_schedule": "cosine"})


@pytest.mark.parametrize(
    ("preset", "task", "needs"),
    [("sac", "CartPole-v1", "continuous"), ("dqn", "Pendulum-v1", "discrete")],
)
def test_an_algorithm_is_refused_an_action_space_it_cannot_act_in(tmp_path, preset, task, needs):
    with pytest.raises(ConfigError, match=f"agent.kind={preset}: .* needs a {needs}.*use --preset ppo"):
        quiet_train(config_for(preset, task), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


# ---------------------------------------------------------------------------- observations


@pytest.mark.parametrize(
    "overrides",
    [{"task": "CartPole-v1"}, {"task": "Pendulum-v1"}, {"task": "CartPole-v1", "env.pixels": True}],
    ids=["cartpole", "pendulum", "cartpole-pixels"],
)
def test_the_sb3_env_passes_sb3s_own_checker(overrides):
    config = build_config(["ppo"], overrides)
    env = SB3Env(make_env(config, 0, "train"), frames=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        check_env(env)
    if config.env.pixels:
        assert env.observation_space.shape == (6, 64, 64)  # 2 RGB frames, channels first
    env.close()


def test_an_sb3_env_ends_episodes_as_dreamrl_does_terminated_or_truncated():
    config = build_config(["ppo"], {"task": "Pendulum-v1"})  # 200-step time limit, never terminal
    env = SB3Env(make_env(config, 0, "train"))
    env.reset()
    for _ in range(199):
        assert env.step(np.zeros(1, np.float32))[2:4] == (False, False)
    assert env.step(np.zeros(1, np.float32))[2:4] == (False, True)  # truncated, not terminated


def test_frame_stack_keeps_the_newest_last_and_restarts_an_env_on_its_first_step():
    space = {"v": Space("float32", (2,))}
    stack = FrameStack(space, 3)
    step = lambda a, b: {"v": np.array([[a, a], [b, b]], np.float32)}  # noqa: E731
    out = stack.observe(step(1, 10), np.array([True, True]))
    assert out["v"][0].tolist() == [1, 1, 1, 1, 1, 1]
    stack.observe(step(2, 20), np.array([False, False]))
    out = stack.observe(step(3, 30), np.array([False, True]))
    assert out["v"][0].tolist() == [1, 1, 2, 2, 3, 3]  # oldest first
    assert out["v"][1].tolist() == [30] * 6  # a new episode: its first frame everywhere
    assert stack.rows(np.array([1])).stack["v"].tolist() == [[30] * 6]


def test_a_replay_buffer_round_trips_through_plain_arrays_keeping_the_newest_that_fit(tmp_path):
    from gymnasium import spaces as gs
    from stable_baselines3.common.buffers import ReplayBuffer

    obs, act = gs.Box(-1, 1, (2,)), gs.Box(-1, 1, (1,))
    full = ReplayBuffer(4, obs, act, device="cpu")
    for t in range(6):  # wraps: holds steps 2..5
        o = np.full((1, 2), t, np.float32)
        full.add(o, o + 0.5, np.zeros((1, 1)), np.array([t]), np.array([False]), [{}])
    assert save_buffer(full, tmp_path / "b.npz") == 4
    with np.load(tmp_path / "b.npz", allow_pickle=False) as saved:
        assert saved["rewards"][:, 0].tolist() == [2, 3, 4, 5]  # oldest first
    larger, smaller = ReplayBuffer(10, obs, act, device="cpu"), ReplayBuffer(3, obs, act, device="cpu")
    assert restore_buffer(larger, tmp_path / "b.npz") == 4
    assert (larger.pos, larger.full, larger.rewards[:4, 0].tolist()) == (4, False, [2, 3, 4, 5])
    assert restore_buffer(smaller, tmp_path / "b.npz") == 3
    assert (smaller.pos, smaller.full, smaller.rewards[:, 0].tolist()) == (0, True, [3, 4, 5])


class CountedModel:
    """What UpdateFlops needs of an SB3 model: an update of one [4, 8] x [8, 16] product
    (1,024 FLOPs) and an action of one [1, 3] x [3, 5] product (30 FLOPs)."""

    def __init__(self):
        self.num_timesteps, self._last_obs, self.calls = 0, np.zeros((2, 3), np.float32), 0

    def train(self) -> str:
        import torch

        self.calls += 1
        torch.ones(4, 8) @ torch.ones(8, 16)
        return "trained"

    def predict(self, obs, deterministic=False):
        import torch

        assert obs.shape == (1, 3) and deterministic
        return (torch.as_tensor(obs) @ torch.ones(3, 5)).numpy(), None


def test_update_flops_counts_the_first_update_after_a_rollout_once_and_steps_aside():
    import pickle

    from dreamrl.baselines.flops import UpdateFlops

    model, reports = CountedModel(), []
    model.num_timesteps, start = 10, 10
    flops = UpdateFlops(model, lambda: start, reports.append)
    with flops.detached():  # SB3's save pickles the model's attributes: none of ours then
        assert "train" not in vars(model) and pickle.dumps(vars(model))
    assert model.train() == "trained" and reports == []  # an empty rollout: not counted
    model.num_timesteps = 14  # a rollout of 4 env steps
    assert model.train() == "trained" and model.calls == 2
    (count,) = reports
    assert (count.update, count.rollout_steps, count.policy_step) == (1024, 4, 30)
    assert count.per_env_step == 1024 / 4 + 30
    assert "train" not in vars(model)  # the class's own train from now on
    model.num_timesteps = 20
    model.train()
    assert len(reports) == 1 and model.calls == 3


# ---------------------------------------------------------------------------- runs


def dreamrl(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", *args], capture_output=True, text=True, timeout=600
    )
    return proc


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory) -> Path:
    """``dreamrl train --preset ppo`` on CartPole-v1: 256 env steps, 8 envs of 16 steps a
    rollout (2 updates), evaluated at 128 and 256."""
    logdir = tmp_path_factory.mktemp("ppo") / "run"
    args = ["train", "--env", "CartPole-v1", "--logdir", str(logdir), "--preset", "ppo", "--steps", "256"]
    args += ["--no-progress", "run.eval_every=128", "agent.baseline.ppo.n_steps=16"]
    args += [f"{k}={v}" for k, v in FAST.items()]
    proc = dreamrl(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RL Zoo's tuned settings for CartPole-v1" in proc.stdout
    return logdir


def test_a_baseline_run_writes_a_run_dir_of_dreamrls_layout(ppo_run):
    files = RunDir(ppo_run)
    assert json.loads(files.config.read_text())["agent"]["kind"] == "ppo"
    records = read_metrics(ppo_run)
    evals = [r for r in records if "eval/return" in r]
    assert [r["step"] for r in evals] == [128, 256] and all(len(r["eval/returns"]) == 2 for r in evals)
    assert any("loss/value" in r for r in records) and any("episode/score" in r for r in records)
    assert max(r["train/updates"] for r in records if "train/updates" in r) == 2 * 10  # 2 updates x 10 epochs
    (_, ckpt), *_ = reversed(list_checkpoints(ppo_run))
    assert (ckpt / BASELINE_MODEL).is_file() and load_loop_state(ckpt)["env_steps"] == 256


def test_a_baseline_logs_the_flops_of_its_first_update_per_env_step_and_compare_reads_them(ppo_run, tmp_path):
    counted = [r for r in read_metrics(ppo_run) if "cost/gflop_per_env_step" in r]
    assert [r["step"] for r in counted] == [128]  # once a session, at the first update
    # SB3's MLPs on CartPole's 4 numbers: a policy 4-64-64-2 and a value net 4-64-64-1.
    # A product of [n, k] by [k, m] is 2nkm FLOPs; backward computes each weight's gradient
    # (as many as forward) and the input's gradient for every layer but the first.
    forward = 2 * (4 * 64 + 64 * 64 + 64 * 2) + 2 * (4 * 64 + 64 * 64 + 64 * 1)
    backward = forward + 2 * (64 * 64 + 64 * 2) + 2 * (64 * 64 + 64 * 1)
    update = 20 * 128 * (forward + backward)  # 20 epochs (RL Zoo's) over 8 envs x 16 steps
    act = 2 * (4 * 64 + 64 * 64 + 64 * 2)  # the deterministic action: the policy net only
    (record,) = counted
    assert record["cost/gflop_per_update_call"] == pytest.approx(update / 1e9, rel=1e-12)
    assert record["cost/gflop_per_policy_step"] == pytest.approx(act / 1e9, rel=1e-12)
    assert record["cost/gflop_per_env_step"] == pytest.approx((update / 128 + act) / 1e9, rel=1e-12)
    from dreamrl.compare import compare_logdirs

    cost = compare_logdirs([ppo_run], tmp_path / "cmp", threshold=100.0)["agents"]["ppo"]["cost"]
    assert cost["flop_source"] == "logged by the runs"
    assert cost["gflop_per_env_step"] == pytest.approx((update / 128 + act) / 1e9, rel=1e-12)


def test_dreamrl_eval_and_report_read_a_baseline_run(ppo_run, tmp_path, capsys):
    args = ["eval", "--logdir", str(ppo_run), "--episodes", "3", "--envs", "1", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["episodes"], summary["env_steps"], summary["agent"]) == (3, 256, "ppo")
    assert all(r >= 8 for r in summary["returns"])  # CartPole pays 1 a step, never ends before 8
    out = tmp_path / "report.html"
    assert main(["report", "--logdir", str(ppo_run), "--out", str(out)]) == 0
    page = out.read_text()
    assert "none (ppo)" in page and "a ppo baseline has no world model" in page
    assert "No evaluation records" not in page and "No loss records" not in page


def test_world_model_commands_refuse_a_baseline_and_dreamers_load_names_the_way(ppo_run, capsys):
    for command in ("diagnose", "whatif"):
        assert main([command, "--logdir", str(ppo_run)]) == 2
        assert "ppo agent, which has no world model" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"holds a ppo agent.*load_agent"):
        DreamerAgent.load(ppo_run)


def test_a_loaded_baseline_acts_on_what_the_env_returns(ppo_run):
    import gymnasium

    agent = load_agent(ppo_run)
    assert isinstance(agent, BaselineAgent) and agent.updates == 20
    env = gymnasium.make("CartPole-v1")
    obs, _ = env.reset(seed=3)
    action, state = agent.act(obs)
    assert action in (0, 1)
    action, state = agent.act(env.step(action)[0], state)
    assert action in (0, 1)


class _Trap:
    """Unpickling this touches a file: proof that something was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_loading_a_baseline_never_unpickles_the_zips_data(ppo_run, tmp_path):
    import base64
    import pickle
    import shutil
    import zipfile

    from dreamrl.run.checkpoint import write_manifest

    (step, ckpt), *_ = reversed(list_checkpoints(ppo_run))
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    pwned = tmp_path / "pwned"
    zipped = copy / BASELINE_MODEL
    with zipfile.ZipFile(zipped) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    trap = base64.b64encode(pickle.dumps(_Trap(pwned))).decode()
    data = json.loads(entries["data"])
    data["policy_class"] = {":type:": "trap", ":serialized:": trap}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zipped, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    write_manifest(copy, step)
    agent = load_agent(copy)
    assert agent.updates == 20 and not pwned.exists()
    from stable_baselines3 import PPO

    with pytest.raises(TypeError):  # SB3's own load unpickles it (then has no policy class)
        PPO.load(zipped)
    assert pwned.exists()  # so the trap was real


def test_rerunning_resumes_a_baseline_where_its_checkpoint_left_it(tmp_path):
    run_dir = tmp_path / "run"
    overrides = {
        "run.eval_every": 100,
        "agent.baseline.sac.learning_starts": 50,
        "agent.baseline.sac.batch_size": 16,
        "agent.baseline.sac.net_arch": (16,),
    }
    first = quiet_train(config_for("sac", "Pendulum-v1", **overrides, **{"run.steps": 100}), run_dir)
    # An update after each step past learning_starts, but the last: training ends at run.steps exactly.
    assert (first.state.env_steps, first.agent.updates) == (100, 49)
    out = io.StringIO()
    again = train(config_for("sac", "Pendulum-v1", **overrides, **{"run.steps": 150}), run_dir, out=out)
    assert (
        # SB3 stops before it stores the step at which its callback said stop.
        "Resuming from ckpt-000000000100: 100 env steps, 49 updates, 99 replay steps loaded" in out.getvalue()
    )
    assert (again.state.env_steps, again.agent.updates) == (150, 98)  # both counters went on
    assert again.state.eval_episodes == 4  # evaluation seeds went on too: 2 at 100, 2 at 150
    steps = [r["step"] for r in read_metrics(run_dir) if "eval/return" in r]
    assert steps == [100, 150]
    assert (list_checkpoints(run_dir)[-1][1] / BASELINE_REPLAY).is_file()
    assert [s["env_steps"] for s in read_sessions(run_dir)] == [0, 100]  # a machine line a session


def stop_signal_at(step: int):
    """An env maker whose training envs send this process SIGTERM at their ``step``-th step."""

    def maker(config, seed, mode):
        env = make_env(config, seed, mode)
        if mode != "train":
            return env
        calls = {"n": 0}
        original = env.step

        def step_then_signal(action):
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(action)

        env.step = step_then_signal
        return env

    return maker


def test_a_stop_signal_saves_a_checkpoint_and_the_rerun_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    overrides = {
        "run.steps": 400,
        "run.eval_every": 0,
        "agent.baseline.envs": 1,
        "agent.baseline.ppo.n_steps": 32,
        "agent.baseline.ppo.batch_size": 32,
    }
    config = config_for("ppo", "CartPole-v1", **overrides)
    with pytest.raises(KeyboardInterrupt):
        quiet_train(config, run_dir, make_env=stop_signal_at(50))
    (step, _), *_ = list_checkpoints(run_dir)
    assert step == 50
    done = quiet_train(config, run_dir)
    assert done.state.env_steps == 400 and list_checkpoints(run_dir)[-1][0] == 400


def test_a_dqn_from_pixels_runs_evaluates_and_loads(tmp_path):
    overrides = {
        "env.pixels": True,
        "agent.baseline.frame_stack": 2,
        "agent.baseline.dqn.learning_starts": 32,
        "agent.baseline.dqn.batch_size": 8,
        "run.eval_eps": 1,
        "run.eval_max_steps": 20,
        "run.steps": 64,
        "run.eval_every": 0,
    }
    trained = quiet_train(config_for("dqn", "CartPole-v1", **overrides), tmp_path / "run")
    assert trained.state.env_steps == 64 and trained.agent.updates > 0
    agent = load_agent(tmp_path / "run")
    assert agent.obs_space["image"].shape == (64, 64, 3)
    frame = {"image": np.zeros((2, 64, 64, 3), np.uint8), "is_first": np.array([True, True])}
    actions, state = agent.policy(frame, None, deterministic=True)
    assert (
        actions.shape == (2,) and actions.dtype == np.int32 and state.stack["image"].shape == (2, 6, 64, 64)
    )
