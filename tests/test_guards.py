"""Guards that stop a run with a message naming the cause: non-finite observations,
rewards and actions; non-finite losses in a row; non-finite weights (never saved);
a replay that cannot fit; and memory that stays flat once the replay is full."""

from __future__ import annotations

import io
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

from dreamrl.agents.dreamer import DreamerAgent
from dreamrl.config import Config, ConfigError, build_config
from dreamrl.envs.gym_adapter import GymEnv
from dreamrl.replay import Replay, check_capacity
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.errors import RunError
from dreamrl.run.train import train
from dreamrl.spaces import Space


class Spiky(gymnasium.Env):
    """Returns a NaN in its observation (or reward) at step 7."""

    def __init__(self, where: str):
        self.where = where
        self.observation_space = gymnasium.spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.zeros(3, np.float32)
        reward = 0.0
        if self.t == 7:
            if self.where == "obs":
                obs[2] = np.nan
            else:
                reward = float("inf")
        return obs, reward, False, self.t >= 20, {}


def config(**overrides) -> Config:
    base = {
        "task": "guard",
        "run.log_every": 0,
        "run.eval_every": 0,
        "run.eval_eps": 0,
        "compute.device": "cpu",
    }
    return build_config(["debug"], {**base, **overrides})


@pytest.mark.parametrize("where, key", [("obs", "vector"), ("reward", "reward")])
def test_non_finite_observation_or_reward_stops_naming_key_and_step(tmp_path, where, key):
    def maker(cfg, seed, mode="train"):
        return GymEnv(Spiky(where), cfg.env.size, seed=seed)

    with pytest.raises(RunError, match=f"{key} from env 0 is not finite at env step 7"):
        train(
            config(**{"run.steps": 100, "run.envs": 1}),
            tmp_path,
            make_env=maker,
            out=io.StringIO(),
            progress=False,
        )


def cartpole(cfg, seed, mode="train"):
    return GymEnv(gymnasium.make("CartPole-v1"), cfg.env.size, seed=seed)


class PoisonedRewardAgent(DreamerAgent):
    """Its reward loss is always NaN."""

    def losses(self, batch):
        losses, metrics, return_stats = super().losses(batch)
        losses["rew"] = losses["rew"] * float("nan")
        return losses, metrics, return_stats


class DivergingAgent(DreamerAgent):
    """Its weights turn NaN after five updates."""

    def train_step(self, data):
        result = super().train_step(data)
        if self.updates >= 5:
            with torch.no_grad():
                next(self.wm.parameters()).fill_(float("nan"))
        return result


def test_non_finite_losses_in_a_row_stop_naming_the_term(tmp_path):
    cfg = config(**{"run.steps": 600, "run.envs": 1, "run.skip_limit": 3})
    with pytest.raises(RunError, match=r"3 updates in a row had a non-finite rew"):
        train(
            cfg,
            tmp_path,
            make_env=cartpole,
            make_agent=PoisonedRewardAgent,
            out=io.StringIO(),
            progress=False,
        )


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    cfg = config(**{"run.steps": 600, "run.envs": 1, "run.save_every": 0})
    with pytest.raises(RunError, match="weights are no longer finite"):
        train(cfg, tmp_path, make_env=cartpole, make_agent=DivergingAgent, out=io.StringIO(), progress=False)
    for _, path in list_checkpoints(tmp_path):  # every checkpoint written holds finite weights
        assert DreamerAgent.load(path).weights_finite()


def test_replay_that_cannot_fit_is_refused_with_numbers(tmp_path):
    spaces = {"image": Space("uint8", (64, 64, 3))}
    with pytest.raises(
        ConfigError, match=r"replay\.size: 100,000,000 steps x 12,288 bytes = .* GB .*at most"
    ):
        check_capacity(spaces, 100_000_000, tmp_path / "replay")
    check_capacity(spaces, 1_000, tmp_path / "replay")  # fits


def test_a_huge_replay_is_refused_before_the_run_writes_anything(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"replay\.size"):
        train(
            config(**{"replay.size": 10**12, "run.steps": 10**12}),
            run_dir,
            make_env=cartpole,
            out=io.StringIO(),
            progress=False,
        )
    assert not run_dir.exists()


def rss() -> int:
    """Resident memory of this process in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def image_step(rng: np.random.Generator, streams: int) -> dict[str, np.ndarray]:
    return {
        "image": rng.integers(0, 256, (streams, 64, 64, 3), dtype=np.uint8),
        "action": np.zeros(streams, np.int32),
        "reward": np.zeros(streams, np.float32),
        "is_first": np.zeros(streams, bool),
        "is_last": np.zeros(streams, bool),
        "is_terminal": np.zeros(streams, bool),
    }


SPACES = {
    "image": Space("uint8", (64, 64, 3)),
    "action": Space("int32", (), 2),
    "reward": Space("float32", ()),
    "is_first": Space("bool", ()),
    "is_last": Space("bool", ()),
    "is_terminal": Space("bool", ()),
}


def test_memory_is_flat_once_full_and_a_reload_does_not_double_it(tmp_path):
    capacity = 2_000  # 24 MB of frames
    rng = np.random.default_rng(0)
    replay = Replay(SPACES, capacity, 2, 16, chunksize=256, directory=tmp_path)
    for _ in range(capacity // 2):
        replay.add(image_step(rng, 2))
    full = rss()
    for _ in range(3 * capacity // 2):  # three more times the capacity
        replay.add(image_step(rng, 2))
    grown = rss() - full
    assert grown < 4 * 2**20, f"resident memory grew {grown / 2**20:.1f} MB after the replay was full"
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.npz"))
    assert on_disk < 1.3 * capacity * 64 * 64 * 3, "evicted chunk files are deleted"
    replay.flush()
    before = rss()
    again = Replay(SPACES, capacity, 2, 16, chunksize=256, directory=tmp_path)
    assert again.load() == capacity
    loaded = rss() - before
    frames = capacity * 64 * 64 * 3
    assert loaded < 1.3 * frames, (
        f"loading took {loaded / 2**20:.1f} MB for {frames / 2**20:.1f} MB of frames"
    )


class NaNActionAgent(DreamerAgent):
    """Its fourth batch of actions is NaN."""

    calls = 0

    def policy(self, obs, state, deterministic=False):
        actions, state = super().policy(obs, state, deterministic)
        self.calls += 1
        if self.calls == 4:
            actions = np.full_like(actions, np.nan)
        return actions, state


def test_non_finite_action_stops_naming_it(tmp_path):
    def pendulum(cfg, seed, mode="train"):
        return GymEnv(gymnasium.make("Pendulum-v1"), cfg.env.size, seed=seed)

    with pytest.raises(RunError, match="action from env 0 is not finite at env step 3"):
        train(
            config(**{"run.steps": 100, "run.envs": 1}),
            tmp_path,
            make_env=pendulum,
            make_agent=NaNActionAgent,
            out=io.StringIO(),
            progress=False,
        )
