"""World-model diagnostics on models whose errors are known: one exact by construction
(errors zero at every horizon) and one that is wrong in a way that compounds (errors
grow with the horizon); counterfactuals under the factual actions reproduce the
open-loop prediction; and the real agent's diagnostics run end to end."""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrl.diagnostics import diagnose, rollout, run_diagnostics, summarize, whatif, whatif_picture
from dreamrl.nets.rssm import Latent
from dreamrl.world_models.base import Batch

C, S, A = 32, 4, 2  # classes, latent variables, actions
ROOT = Path(__file__).resolve().parents[1]
DISCOUNT = 1 - 1 / 333


def onehot_state(index: torch.Tensor) -> torch.Tensor:
    """``[..., S]`` class indices -> one-hot ``[..., C, S]`` (classes-major, as the RSSM)."""
    return torch.nn.functional.one_hot(index, C).transpose(-1, -2).float()


def log_probs(index: torch.Tensor) -> torch.Tensor:
    """Confident categorical log-probs ``[..., C, S]`` on ``index``."""
    return torch.log(0.999 * onehot_state(index) + 0.001 / C)


class Oracle:
    """A model of the counter world: each latent variable counts up by the action (0 or
    1) every step, mod C; the observation is the one-hot state, the reward the mean
    count, and episodes never end. ``error`` makes imagination wrong: variable j gains
    one extra count per step once the horizon passes j, so mistakes compound."""

    def __init__(self, error: bool):
        self.error = error

    @staticmethod
    def index(latent: Latent) -> torch.Tensor:
        return latent.stoch.argmax(-2)  # [..., S]

    def observe(self, batch: Batch, generator):
        index = batch.obs["vector"].reshape(*batch.obs["vector"].shape[:2], C, S).argmax(-2)
        return Latent(torch.zeros(*index.shape[:2], 1), onehot_state(index)), log_probs(index)

    def imagine(self, start, actions, generator, horizon):
        index = self.index(start)
        states = []
        for h in range(actions.shape[1]):
            index = (index + actions[:, h].argmax(-1, keepdim=True)) % C
            if self.error:
                index = (index + (h + 1 > torch.arange(S))) % C
            states.append(index)
        index = torch.stack(states, 1)
        return Latent(torch.zeros(*index.shape[:2], 1), onehot_state(index)), log_probs(index)

    def decode(self, latent):
        return {"vector": latent.stoch.flatten(-2)}

    def reward(self, latent):
        return self.index(latent).float().mean(-1)

    def cont(self, latent):
        return torch.full(latent.deter.shape[:2], DISCOUNT)

    def codes(self, latent):
        return latent.stoch


def counter_batch(batch: int = 8, length: int = 12, seed: int = 0) -> Batch:
    """Real sequences of the counter world, from random starts and actions (starts low
    enough that no count wraps around within a sequence, wrong model included)."""
    B, T = batch, length
    rng = np.random.default_rng(seed)
    index = np.zeros((B, T, S), np.int64)
    index[:, 0] = rng.integers(0, 8, (B, S))
    actions = rng.integers(0, A, (B, T))
    for t in range(1, T):
        index[:, t] = (index[:, t - 1] + actions[:, t - 1][:, None]) % C
    state = onehot_state(torch.as_tensor(index))
    return Batch(
        obs={"vector": state.flatten(-2)},
        action=torch.nn.functional.one_hot(torch.as_tensor(actions), A).float(),
        reward=torch.as_tensor(index, dtype=torch.float32).mean(-1),
        is_first=torch.zeros(B, T, dtype=torch.bool).index_fill_(1, torch.tensor([0]), True),
        is_last=torch.zeros(B, T, dtype=torch.bool),
        is_terminal=torch.zeros(B, T, dtype=torch.bool),
    )


def fixture_agent():
    """The agent of the format-1 fixture checkpoint (CartPole-v1), its RSSM steps eager.

    Its config predates ``compute.compile``, so it loads with compiling on; compiled,
    these tests' rollouts cost a minute and more of C++ builds on a cold cache, for
    nothing that they assert (a failing compile runs eager, and test_compiled.py checks
    the compiled steps against eager)."""
    from dreamrl.agent import Agent

    agent = Agent.load(ROOT / "tests" / "fixtures" / "checkpoint_v1")
    agent.wm.rssm.fused = False
    return agent


def test_exact_model_has_zero_error_at_every_horizon():
    batch = counter_batch()
    d = diagnose(rollout(Oracle(error=False), batch, context=4), batch, set(), DISCOUNT)
    assert d["horizon"] == 8 and d["context"] == 4
    assert max(d["reward_error"]) < 1e-6
    assert max(d["continue_error"]) < 1e-6
    assert max(d["kl"]) < 1e-6
    assert max(d["drift"]) == 0.0
    assert max(d["obs_error"]["vector"]) < 1e-9 and d["recon_error"]["vector"] < 1e-9
    assert "No component stands out" in summarize(d)


def test_wrong_model_errors_grow_with_horizon():
    batch = counter_batch()
    d = diagnose(rollout(Oracle(error=True), batch, context=4), batch, set(), DISCOUNT)
    for name in ("reward_error", "kl", "drift"):
        curve = d[name]
        growing = curve[:S]  # until every variable is wrong
        assert all(b > a for a, b in itertools.pairwise(growing)), (name, curve)
    assert d["reward_error"][0] == pytest.approx(1 / S)  # one variable off by one count
    assert d["reward_error"][2] == pytest.approx((3 + 2 + 1) / S)  # off by 3, 2 and 1
    assert d["obs_error"]["vector"][-1] > d["obs_error"]["vector"][0]
    assert d["recon_error"]["vector"] < 1e-9  # the representation itself is exact
    assert "Weakest:" in summarize(d)


def test_counterfactual_under_the_taken_actions_is_the_open_loop_prediction():
    from dreamrl.diagnostics.rollout import WorldModelView
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    agent = fixture_agent()
    result = evaluate(agent, functools.partial(make_env, agent.config, None), [11], record=True)
    episode = result.episodes[0]
    t, horizon = 3, 4
    same = whatif(agent, episode, t, episode["action"][t : t + horizon], horizon, seed=5)
    assert same.counterfactual.rewards == same.factual.rewards
    assert same.counterfactual.continues == same.factual.continues
    window = {k: v[None, : t + 1 + horizon] for k, v in episode.items()}
    r = rollout(WorldModelView(agent), agent.to_batch(window), t + 1, seed=5)
    assert r.reward[0].tolist() == same.factual.rewards
    other = whatif(agent, episode, t, 1 - episode["action"][t : t + horizon], horizon, seed=5)
    assert other.counterfactual.rewards != other.factual.rewards  # other actions, other future
    assert other.real.rewards == episode["reward"][t + 1 : t + 1 + horizon].tolist()
    png = whatif_picture(other, [])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_diagnostics_writes_json_and_picture(tmp_path):
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    agent = fixture_agent()
    result = evaluate(agent, functools.partial(make_env, agent.config, None), [1, 2, 3, 4], 2, record=True)
    d = run_diagnostics(agent, result.episodes, tmp_path, step=300, context=4, horizon=3)
    assert d is not None
    saved = json.loads((tmp_path / "diagnose-000000000300.json").read_text())
    assert saved["horizon"] == 3 and len(saved["kl"]) == 3 and saved["summary"]
    assert (tmp_path / saved["images"]["openloop"]).read_bytes()[:4] == b"\x89PNG"
    assert run_diagnostics(agent, result.episodes, None, 0, context=200, horizon=15) is None  # too short


def test_counterfactual_under_the_agents_own_policy():
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    agent = fixture_agent()
    episode = evaluate(agent, functools.partial(make_env, agent.config, None), [11], record=True).episodes[0]
    result = whatif(agent, episode, 2, "policy", 4, "the agent's policy", seed=1)
    assert len(result.counterfactual.rewards) == 4 and result.description == "the agent's policy"
    with pytest.raises(ValueError, match="policy"):
        whatif(agent, episode, 2, "nonsense", 4)


def test_evaluation_in_worker_processes_matches_inline():
    """Envs stepped in worker processes (so the trainer never loads a simulator) play
    the same episodes, step for step, as envs stepped here."""
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    agent = fixture_agent()
    maker = functools.partial(make_env, agent.config, None, "eval")
    seeds = [1, 2, 3]
    here = evaluate(agent, maker, seeds, 2, record=True)
    there = evaluate(agent, maker, seeds, 2, record=True, workers="process")
    assert there.returns == here.returns and there.lengths == here.lengths
    for a, b in zip(here.episodes, there.episodes):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_evaluation_env_that_cannot_start_names_itself():
    from dreamrl.envs.pool import EnvError
    from dreamrl.run.evaluate import evaluate

    from fixtures.faulty_envs import broken_factory

    agent = object()  # never asked for an action: the envs fail first
    with pytest.raises(EnvError, match=r"evaluation env 0 could not start: ValueError: no such simulator"):
        evaluate(agent, broken_factory, [1, 2], 2, workers="process")
    with pytest.raises(ValueError, match="no such simulator"):  # inline: the env's own error
        evaluate(agent, broken_factory, [1, 2], 2)
