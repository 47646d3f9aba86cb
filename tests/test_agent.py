"""The agent: a train step runs and changes weights, save/load round trips exactly,
same seed gives the same numbers, and acting carries its state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamrl.agent import Agent
from dreamrl.config import build_config
from dreamrl.run.bench import random_batch
from dreamrl.spaces import Space, replay_spaces

VECTOR = {"vector": Space("float32", (4,))}
IMAGE = {"image": Space("uint8", (64, 64, 3)), "vector": Space("float32", (3,))}
DISCRETE = Space("int32", (), 3)
CONTINUOUS = Space("float32", (2,))


def make_agent(obs=VECTOR, act=DISCRETE, seed=0, **overrides):
    config = build_config(["debug"], {"task": "test", "seed": seed, "compute.device": "cpu", **overrides})
    return Agent(config, obs, act)


def fake_batch(agent: Agent, seed: int = 0) -> dict[str, np.ndarray]:
    """A replay-shaped batch of random data, episodes starting at t=0 and t=9."""
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    B, T = agent.config.batch_size, agent.config.batch_length
    out = random_batch(spaces, B, T, np.random.default_rng(seed))
    out["is_first"][:, 9] = True
    out["is_last"][:, 8] = True
    out["is_terminal"][:, 8] = True
    return out


def obs_batch(agent: Agent, n: int, first: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs: dict[str, np.ndarray] = {}
    for key, space in agent.obs_space.items():
        if space.dtype == "uint8":
            obs[key] = rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
        else:
            obs[key] = rng.normal(size=(n, *space.shape)).astype(np.float32)
    obs["is_first"] = np.full(n, first)
    return obs


@pytest.mark.parametrize("obs, act", [(VECTOR, DISCRETE), (IMAGE, CONTINUOUS)])
def test_train_step_reports_every_loss_and_moves_weights(obs, act):
    agent = make_agent(obs, act, **{"agent.opt.warmup": 0})
    before = [p.detach().clone() for p in agent.wm.parameters()]
    metrics = agent.train_step(fake_batch(agent)).metrics
    expected = {f"loss/{k}" for k in [*obs, "rew", "con", "dyn", "rep", "policy", "value", "repval"]}
    assert expected <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    moved = [not torch.equal(a, b) for a, b in zip(before, agent.wm.parameters())]
    assert sum(moved) > len(moved) // 2


def test_first_update_is_warmup_noop_but_counts():
    """The learning rate of the first warm-up update is zero, as in the paper's code."""
    agent = make_agent()
    before = [p.detach().clone() for p in agent.ac.actor.parameters()]
    agent.train_step(fake_batch(agent))
    assert agent.updates == 1
    assert all(torch.equal(a, b) for a, b in zip(before, agent.ac.actor.parameters()))


def test_slow_critic_tracks_critic():
    agent = make_agent(**{"agent.opt.warmup": 0})
    agent.train_step(fake_batch(agent))
    agent.train_step(fake_batch(agent, 1))
    slow = torch.cat([p.flatten() for p in agent.ac.slow_critic.parameters()])
    fast = torch.cat([p.flatten() for p in agent.ac.critic.parameters()])
    assert not torch.equal(slow, fast)
    assert not any(p.requires_grad for p in agent.ac.slow_critic.parameters())


def test_same_seed_same_numbers():
    a, b = make_agent(seed=3), make_agent(seed=3)
    batch = fake_batch(a)
    for _ in range(2):
        ma, mb = a.train_step(batch), b.train_step(batch)
    assert ma == mb
    c = make_agent(seed=4)
    assert c.train_step(batch) != make_agent(seed=3).train_step(batch)


def test_save_load_round_trip_gives_identical_actions(tmp_path):
    agent = make_agent(IMAGE, CONTINUOUS, **{"agent.opt.warmup": 0})
    agent.train_step(fake_batch(agent))
    agent.save(tmp_path)
    loaded = Agent.load(tmp_path)
    for key, value in agent.state_tensors().items():
        assert torch.equal(value, loaded.state_tensors()[key]), key
    obs = obs_batch(agent, 3, first=True)
    for deterministic in (True, False):
        a1, s1 = agent.policy(obs, None, deterministic)
        a2, s2 = loaded.policy(obs, None, deterministic)
        np.testing.assert_array_equal(a1, a2)
        later = obs_batch(agent, 3, first=False, seed=1)
        np.testing.assert_array_equal(
            agent.policy(later, s1, deterministic)[0], loaded.policy(later, s2, deterministic)[0]
        )
    # Training continues identically too (optimiser moments and generators restored).
    batch = fake_batch(agent, 5)
    assert agent.train_step(batch) == loaded.train_step(batch)


def test_policy_state_matters_and_is_first_resets_it():
    agent = make_agent()
    obs = obs_batch(agent, 2, first=True)
    _, state = agent.policy(obs, None, deterministic=True)
    later = obs_batch(agent, 2, first=False, seed=1)
    _, carried = agent.policy(later, state, deterministic=True)
    _, fresh = agent.policy(later, None, deterministic=True)
    assert not torch.equal(carried.model.deter, fresh.model.deter)
    # With is_first set, the carried state is ignored.
    reset = {**later, "is_first": np.array([True, True])}
    _, from_carried = agent.policy(reset, state, deterministic=True)
    _, from_none = agent.policy(reset, None, deterministic=True)
    assert torch.equal(from_carried.model.deter, from_none.model.deter)


def test_continuous_actions_in_bounds_and_discrete_indices():
    cont = make_agent(VECTOR, CONTINUOUS)
    actions, _ = cont.policy(obs_batch(cont, 5, True), None, deterministic=False)
    assert actions.shape == (5, 2) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    disc = make_agent(VECTOR, DISCRETE)
    actions, _ = disc.policy(obs_batch(disc, 5, True), None, deterministic=False)
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1, 2}


def test_non_finite_loss_skips_the_update():
    agent = make_agent()
    batch = fake_batch(agent)
    batch["vector"][0, 3, 0] = np.nan
    before = [p.detach().clone() for p in agent.wm.parameters()]
    result = agent.train_step(batch)
    assert not result.applied and result.metrics["train/skipped"] == 1.0
    assert agent.updates == 0
    assert "vector" in result.nonfinite
    assert all(torch.equal(a, b) for a, b in zip(before, agent.wm.parameters()))


def test_a_skipped_update_leaves_the_whole_agent_as_it_was_and_training_goes_on():
    """A non-finite observation makes the imagined returns non-finite too. The skipped
    update must not take them into the return normaliser (whose percentiles would be NaN
    from then on, skipping every later update), nor move the slow critic or the optimiser."""
    agent = make_agent(**{"agent.opt.warmup": 0})
    agent.train_step(fake_batch(agent))  # some finite history first
    before = {k: v.clone() for k, v in agent.state_tensors().items() if not k.startswith("rng.")}
    poisoned = fake_batch(agent, 1)
    poisoned["vector"][:, :, 0] = np.nan
    assert not agent.train_step(poisoned).applied
    after = agent.state_tensors()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert torch.isfinite(agent.ac.retnorm.lo) and torch.isfinite(agent.ac.retnorm.hi)
    for seed in (2, 3):  # the run goes on: later finite batches are trained on
        result = agent.train_step(fake_batch(agent, seed))
        assert result.applied and np.isfinite(result.metrics["loss/total"])
    assert agent.updates == 3
