"""The agent acting by planning (agent.act=mpc): state carried, deterministic, and
`dreamrl eval --act mpc` on any checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreamrl.agent import Agent
from dreamrl.cli import main
from dreamrl.config import MPCConfig, build_config
from dreamrl.rundir import RunDir
from dreamrl.spaces import Space

SMALL_MPC = {"agent.mpc.samples": 16, "agent.mpc.elites": 4, "agent.mpc.policy_samples": 2}
VECTOR = {"vector": Space("float32", (3,))}


def make_agent(act_space: Space, **overrides) -> Agent:
    config = build_config(
        ["debug", "mpc"], {"task": "test", "compute.device": "cpu", **SMALL_MPC, **overrides}
    )
    return Agent(config, VECTOR, act_space)


def observations(n: int, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"vector": rng.normal(size=(n, 3)).astype(np.float32), "is_first": np.full(n, t == 0)}
        for t in range(steps)
    ]


def actions_over(agent: Agent, obs: list[dict[str, np.ndarray]], deterministic: bool = True) -> list:
    state, out = None, []
    for o in obs:
        action, state = agent.policy(o, state, deterministic)
        out.append(action)
    return out


@pytest.mark.parametrize(
    "act_space", [Space("int32", (), 3), Space("float32", (2,))], ids=["discrete", "continuous"]
)
def test_planning_carries_its_plan_and_is_deterministic_for_a_seed(act_space, tmp_path):
    agent = make_agent(act_space)
    agent.save(tmp_path)
    again = Agent.load(tmp_path)  # the same weights and generators: the same draws
    obs = observations(2, 4)
    first = actions_over(agent, obs)
    assert all(np.array_equal(a, b) for a, b in zip(first, actions_over(again, obs)))
    _, state = agent.policy(obs[0], None, True)
    assert state.plan is not None and state.plan.shape == (
        2,
        MPCConfig().horizon,
        3 if act_space.discrete else 2,
    )
    stats = agent.policy_metrics()
    assert stats["mpc/ms_per_call"] > 0 and 0 <= stats["mpc/differs_from_actor"] <= 1
    assert stats["mpc/differs_by"] >= 0
    assert agent.policy_metrics() == {}  # read and reset


def test_the_plan_is_part_of_the_checkpointed_policy_state():
    agent = make_agent(Space("float32", (2,)))
    _, state = agent.policy(observations(3, 1)[0], None, True)
    tensors = agent.policy_state_tensors(state)
    assert "policy.plan" in tensors
    back = agent.policy_state_from_tensors(tensors)
    assert torch.equal(back.plan, state.plan)
    rows = agent.select_rows(state, torch.tensor([2, 0]))
    assert torch.equal(rows.plan, state.plan[[2, 0]])


def test_the_actor_agent_carries_no_plan():
    config = build_config(["debug"], {"task": "test", "compute.device": "cpu"})
    agent = Agent(config, VECTOR, Space("int32", (), 3))
    _, state = agent.policy(observations(2, 1)[0], None, True)
    assert state.plan is None and "policy.plan" not in agent.policy_state_tensors(state)
    assert agent.policy_metrics() == {}


def test_eval_act_mpc_plans_with_any_checkpoint_and_keeps_the_actors_result(tmp_path, capsys):
    logdir = tmp_path / "run"
    train = ["train", "--env", "CartPole-v1", "--logdir", str(logdir), "--preset", "debug"]
    assert main([*train, "run.steps=200", "run.train_ratio=4", "run.eval_eps=1", "run.eval_every=0"]) == 0
    capsys.readouterr()
    evaluate = ["eval", "--logdir", str(logdir), "--episodes", "2", "--envs", "2", "--json"]
    assert main([*evaluate, "--act", "mpc"]) == 0
    out = capsys.readouterr().out
    assert "Planned (shooting, horizon 3)" in out
    planned = json.loads(out.strip().splitlines()[-1])
    assert planned["act"] == "mpc" and planned["mpc/planned_steps_per_s"] > 0
    # CartPole pays 1 a step: every window the planner's horizon closed whole received 1 + g + g^2.
    gamma = 1 - 1 / 333
    assert planned["mpc/horizon_windows"] > 0 and "Rewards over the next 3 steps" in out
    assert planned["mpc/horizon_received"] == pytest.approx(1 + gamma + gamma**2)
    saved = [p.name for p in RunDir(logdir).evals.iterdir()]
    assert len(saved) == 1 and saved[0].endswith("-mpc.json")
    assert main([*evaluate, "--act", "mpc"]) == 0  # deterministic for the seed
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["returns"] == planned["returns"]
    assert main(evaluate) == 0
    actor = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert actor["act"] == "actor" and "mpc/ms_per_call" not in actor
    assert len(list(RunDir(logdir).evals.iterdir())) == 2  # the actor's beside the planner's


def test_planned_rewards_are_matched_with_the_rewards_that_follow():
    agent = make_agent(Space("float32", (2,)))
    gamma = 1 - 1 / agent.config.agent.horizon
    none = np.zeros(2, bool)
    state = None
    for t, o in enumerate(observations(2, 6)):
        step = {
            **o,
            "reward": np.full(2, 0.0 if t == 0 else 1.0, np.float32),
            "is_last": none,
            "is_terminal": none,
        }
        _, state = agent.policy(step, state, deterministic=False)
    out = agent.policy_metrics()
    # Six steps: the windows of the first three closed whole (horizon 3), two envs each.
    assert out["mpc/horizon_windows"] == 6
    assert out["mpc/horizon_received"] == pytest.approx(1 + gamma + gamma**2)
    assert np.isfinite(out["mpc/horizon_planned"])
    assert out["mpc/horizon_error"] == pytest.approx(out["mpc/horizon_planned"] - out["mpc/horizon_received"])
    assert state.windows.open.all()  # the last three steps' windows wait for their rewards
    back = agent.policy_state_from_tensors(agent.policy_state_tensors(state))
    assert torch.equal(back.windows.planned, state.windows.planned)
    assert torch.equal(back.windows.open, state.windows.open)
    assert agent.select_rows(state, torch.tensor([1])).windows.open.shape == (1, 3)
    assert agent.policy_metrics() == {}  # read and reset


def test_acting_without_rewards_plans_but_matches_nothing():
    agent = make_agent(Space("float32", (2,)))
    _, state = agent.act({"vector": np.zeros(3, np.float32)})
    _, state = agent.act({"vector": np.ones(3, np.float32)}, state)
    assert state.windows is None and state.plan is not None
    out = agent.policy_metrics()
    assert out["mpc/ms_per_call"] > 0 and "mpc/horizon_windows" not in out
