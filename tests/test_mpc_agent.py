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
    stats = agent.plan_stats.summary()
    assert stats["mpc/ms_per_call"] > 0 and stats["mpc/differs_from_actor"] >= 0
    assert agent.plan_stats.summary() == {}  # read and reset


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
    assert agent.plan_stats.summary() == {}


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
    saved = [p.name for p in RunDir(logdir).evals.iterdir()]
    assert len(saved) == 1 and saved[0].endswith("-mpc.json")
    assert main([*evaluate, "--act", "mpc"]) == 0  # deterministic for the seed
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["returns"] == planned["returns"]
    assert main(evaluate) == 0
    actor = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert actor["act"] == "actor" and "mpc/ms_per_call" not in actor
    assert len(list(RunDir(logdir).evals.iterdir())) == 2  # the actor's beside the planner's
