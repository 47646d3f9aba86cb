"""The latent planners of dreamrl.behaviors.mpc on hand-made models that are exact by
construction (a point on a line, no neural nets): MPPI, CEM and discrete shooting find
the known best actions, the warm start shifts the plan, the actor's sequences are among
the candidates, the critic counts at the horizon (MPPI) or not at all (CEM), the return
is dreamrl's lambda-return, and a seeded generator fixes every draw. One smoke test
plans through a real (untrained) dreamrl world model and actor-critic."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from dreamrl.behaviors.actor_critic import lambda_return
from dreamrl.behaviors.mpc import (
    DreamerPlanModel,
    MPCConfig,
    Plan,
    cem,
    initial_plan,
    mppi,
    plan_action,
    reset_plan,
    score,
    score_parts,
    shift,
    shooting,
)

MOVES = torch.tensor([-1.0, 0.0, 1.0])  # discrete actions: left, stay, right


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- toy models


class Fixed:
    """An actor whose every sample is ``action``."""

    def __init__(self, feat: torch.Tensor, action: torch.Tensor):
        self.action = action.expand(feat.shape[0], -1).clone()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.action

    def mode(self) -> torch.Tensor:
        return self.action


class UniformBox:
    """Continuous actor: uniform in [-1, 1]^A."""

    def __init__(self, feat: torch.Tensor, width: int):
        self.shape = (feat.shape[0], width)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand(self.shape, generator=generator) * 2 - 1

    def mode(self) -> torch.Tensor:
        return torch.zeros(self.shape)


class UniformOneHot:
    """Discrete actor: uniform over the three moves, one-hot."""

    def __init__(self, feat: torch.Tensor):
        self.n = feat.shape[0]

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.multinomial(torch.ones(self.n, 3), 1, generator=generator)[:, 0]
        return torch.nn.functional.one_hot(idx, 3).float()

    def mode(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.ones(self.n, dtype=torch.long), 3).float()


class Point:
    """A point on a line, exact: state and features ``x [M, 1]``, ``x' = x + a`` (one-hot
    actions move by -1, 0, +1), reward ``-reward_scale * |x' - target|`` on arriving,
    continue ``cont``, value ``value_slope * x``. Records the actions of every rollout."""

    def __init__(
        self,
        target: float = 0.5,
        discrete: bool = False,
        reward_scale: float = 1.0,
        value_slope: float = 0.0,
        cont: float = 1.0,
        actor: Any = None,
    ):
        self.target = target
        self.discrete = discrete
        self.reward_scale = reward_scale
        self.value_slope = value_slope
        self.cont_p = cont
        default = UniformOneHot if discrete else (lambda f: UniformBox(f, 1))
        self.make_actor = actor or default
        self.given: list[torch.Tensor] = []  # actions of rollouts given as tensors
        self.rolled: list[torch.Tensor] = []  # actions of rollouts driven by a policy

    def imagine(
        self, start: torch.Tensor, policy: Any, horizon: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, feats, acts = start, [start], []
        for t in range(horizon):
            a = policy(x) if callable(policy) else policy[:, t]
            x = x + (a @ MOVES[:, None] if self.discrete else a)
            feats.append(x)
            acts.append(a)
        actions = torch.stack(acts, 1)
        (self.rolled if callable(policy) else self.given).append(actions)
        return torch.stack(feats, 1), actions

    def reward(self, feat: torch.Tensor) -> torch.Tensor:
        return -self.reward_scale * (feat[..., 0] - self.target).abs()

    def cont(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.full(feat.shape[:-1], self.cont_p)

    def value(self, feat: torch.Tensor) -> torch.Tensor:
        return self.value_slope * feat[..., 0]

    def actor(self, feat: torch.Tensor) -> Any:
        return self.make_actor(feat)


STARTS = torch.tensor([[0.0], [-2.0], [1.5], [0.3], [0.5]])
BEST_FIRST = (0.5 - STARTS).clamp(-1, 1)  # the unique optimal first move toward target 0.5


def fresh(n: int, cfg: MPCConfig, width: int = 1) -> Plan:
    return initial_plan(n, cfg.horizon, width)


# ----------------------------------------------------------------------------- 1. MPPI finds the optimum


@pytest.mark.parametrize("deterministic", [True, False])
def test_mppi_finds_the_best_first_action(deterministic: bool) -> None:
    cfg = MPCConfig()
    action, plan, info = mppi(STARTS, Point(), cfg, fresh(5, cfg), gen(), deterministic)
    assert action.shape == (5, 1) and plan.mean.shape == (5, 3, 1) and info.ret.shape == (5,)
    assert (action.abs() <= 1).all()
    tol = 0.1 if deterministic else 0.2  # stochastic: an elite's first action plus std noise
    assert (info.first - BEST_FIRST).abs().max() < 0.1
    assert (action - BEST_FIRST).abs().max() < tol
    # The optimal return from 0: reach the target in one move (-0 - 0 - 0); from -2: -1.5 - 0.5 - 0.
    assert abs(info.ret[0]) < 0.15 and abs(info.ret[1] + 2.0) < 0.15


def test_plan_action_dispatches() -> None:
    cfg = MPCConfig()
    a1, _, _ = plan_action(STARTS, Point(), cfg, fresh(5, cfg), gen(3), True)
    a2, _, _ = mppi(STARTS, Point(), cfg, fresh(5, cfg), gen(3), True)
    assert torch.equal(a1, a2)
    planet = MPCConfig.planet()
    b1, _, _ = plan_action(STARTS, Point(), planet, fresh(5, planet), gen(3), True)
    b2, _, _ = cem(STARTS, Point(), planet, fresh(5, planet), gen(3))
    assert torch.equal(b1, b2)


# ----------------------------------------------------------------------------- 2. warm start


def test_shift_moves_the_mean_one_step_and_zeroes_the_last() -> None:
    mean = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    out = shift(Plan(mean)).mean
    assert torch.equal(out[:, :-1], mean[:, 1:])
    assert (out[:, -1] == 0).all()
    reset = reset_plan(Plan(mean), torch.tensor([True, False])).mean
    assert (reset[0] == 0).all() and torch.equal(reset[1], mean[1])


def test_mppi_starts_from_the_shifted_plan() -> None:
    cfg = MPCConfig(iterations=0, policy_samples=0)
    prev = Plan(torch.tensor([[[0.1], [0.2], [0.3]], [[-0.4], [-0.5], [-0.6]]]))
    action, plan, _ = mppi(STARTS[:2], Point(), cfg, prev, gen(), deterministic=True)
    assert torch.equal(plan.mean, shift(prev).mean)
    assert torch.allclose(action, torch.tensor([[0.2], [-0.5]]))

    # One iteration with a vanishing std: every proposal is the shifted mean.
    spy = Point()
    tiny = MPCConfig(iterations=1, policy_samples=0, samples=8, elites=2, min_std=1e-6, max_std=1e-6)
    mppi(STARTS[:2], spy, tiny, prev, gen())
    proposals = spy.given[0].view(2, 8, 3, 1)
    expected = shift(prev).mean[:, None].expand_as(proposals)
    assert torch.allclose(proposals, expected, atol=1e-5)

    # Without the warm start the proposals centre on zero instead.
    cold = Point()
    mppi(STARTS[:2], cold, dataclasses.replace(tiny, warm_start=False), prev, gen())
    assert cold.given[0].abs().max() < 1e-4


# ----------------------------------------------------------------------------- 3. the actor's sequences


def test_policy_samples_are_among_the_evaluated_sequences() -> None:
    fixed = torch.tensor([[0.3]])
    spy = Point(actor=lambda f: Fixed(f, fixed))
    cfg = MPCConfig(samples=32, elites=4, policy_samples=5, iterations=2)
    mppi(STARTS[:2], spy, cfg, fresh(2, cfg), gen())
    assert len(spy.rolled) == 1  # the actor is rolled once per env step, before the iterations
    assert torch.allclose(spy.rolled[0], torch.full((2 * 5, 3, 1), 0.3))
    assert len(spy.given) == cfg.iterations  # stochastic: no extra rollout of the final mean
    for given in spy.given[: cfg.iterations]:
        per_env = given.view(2, 32, 3, 1)
        assert torch.allclose(per_env[:, :5], torch.full((2, 5, 3, 1), 0.3))
        assert not torch.allclose(per_env[:, 5:], torch.full((2, 27, 3, 1), 0.3))


# ----------------------------------------------------------------------------- 4. the critic at the horizon


def test_score_is_the_lambda_one_return() -> None:
    model = Point(target=0.0, value_slope=2.0, cont=0.9)
    feat = torch.tensor([[[5.0], [1.0], [-2.0], [3.0]]])  # x0..x3: rewards -1, -2, -3; value 6
    c = 0.9
    hand = -1 + c * -2 + c * c * -3 + c**3 * 6
    assert torch.allclose(score(model, feat, True), torch.tensor([hand]))
    assert torch.allclose(score(model, feat, False), torch.tensor([-1 + c * -2 + c * c * -3]))
    # The same as dreamrl's lambda-return with lambda = 1 from the start.
    rew, cont, val = model.reward(feat), model.cont(feat), model.value(feat)
    ret = lambda_return(torch.zeros_like(cont), 1 - cont, rew, val, 1.0, 1.0)
    assert torch.allclose(ret[:, 0], score(model, feat, True))


def test_value_at_the_horizon_decides_for_mppi_but_not_cem() -> None:
    n = 32
    starts = torch.zeros(n, 1)
    model = Point(reward_scale=0.0, value_slope=1.0)  # every action earns 0; value prefers right
    cfg = MPCConfig()
    action, _, info = mppi(starts, model, cfg, fresh(n, cfg), gen(), deterministic=True)
    assert (action > 0.5).all()
    assert torch.allclose(info.ret, torch.full((n,), 3.0), atol=0.3)  # x_H = 3 at best
    planet = MPCConfig.planet()
    first, _, info = cem(starts, model, planet, fresh(n, planet), gen())
    assert (info.ret == 0).all()  # rewards only: every sequence scores the same
    share = (first > 0).float().mean().item()
    assert 0.2 < share < 0.8 and first.mean().abs() < 0.3


# ----------------------------------------------------------------------------- 5. determinism


@pytest.mark.parametrize("planner", ["mppi", "cem", "shooting"])
def test_the_generator_fixes_every_draw(planner: str) -> None:
    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        if planner == "shooting":
            cfg = MPCConfig(samples=16, elites=4, policy_samples=0, temperature=0.1)
            action, plan, _ = shooting(STARTS, Point(discrete=True), cfg, fresh(5, cfg, 3), gen(seed))
        elif planner == "cem":
            cfg = MPCConfig.planet()
            action, plan, _ = cem(STARTS, Point(), cfg, fresh(5, cfg), gen(seed))
        else:
            cfg = MPCConfig()
            action, plan, _ = mppi(STARTS, Point(), cfg, fresh(5, cfg), gen(seed))
        return action, plan.mean

    a, m = run(1)
    b, n = run(1)
    assert torch.equal(a, b) and torch.equal(m, n)
    c, k = run(2)
    assert not torch.equal(m, k)
    if planner != "shooting":  # discrete actions may well coincide; plans do not
        assert not torch.equal(a, c)


# ----------------------------------------------------------------------------- 6. CEM and discrete shooting


def test_cem_finds_the_best_first_action() -> None:
    cfg = MPCConfig.planet()
    assert (cfg.horizon, cfg.iterations, cfg.samples, cfg.elites) == (12, 10, 1000, 100)
    assert (cfg.policy_samples, cfg.warm_start, cfg.max_std) == (0, False, 1.0)
    first, plan, info = cem(STARTS, Point(), cfg, fresh(5, cfg), gen())
    assert plan.mean.shape == (5, 12, 1)
    assert torch.equal(first, plan.mean[:, 0]) and torch.equal(info.first, first)
    # Twelve steps of rank-only refits from 1000 candidates leave the first action within
    # about 0.15 of the optimum (the boundary case -1 is the hardest) and the return near it.
    assert (first - BEST_FIRST).abs().max() < 0.25
    optimal = torch.tensor([0.0, -2.0, 0.0, 0.0, 0.0])
    assert ((info.ret - optimal).abs() < 0.7).all()
    # Over three steps PlaNet's search finds the optimum itself.
    short = dataclasses.replace(cfg, horizon=3)
    first, _, info = cem(STARTS, Point(), short, fresh(5, short), gen())
    assert (first - BEST_FIRST).abs().max() < 0.02
    assert torch.allclose(info.ret, optimal, atol=0.02)


def test_shooting_picks_the_best_discrete_action() -> None:
    starts = torch.tensor([[-2.0], [0.0], [2.0], [-0.0]])
    model = Point(target=0.0, discrete=True)
    cfg = MPCConfig(samples=64, elites=8)
    action, plan, info = shooting(starts, model, cfg, fresh(4, cfg, 3), gen(), deterministic=True)
    assert torch.equal(action.argmax(-1), torch.tensor([2, 1, 0, 1]))  # right, stay, left, stay
    assert plan.mean.shape == (4, 3, 3) and torch.equal(plan.mean[:, 0], action)
    assert torch.allclose(info.ret, torch.tensor([-1.0, 0.0, -1.0, 0.0]))
    # Stochastic with a sharp temperature: still the best first move.
    sharp = MPCConfig(samples=64, elites=8, temperature=50.0)
    action, _, _ = shooting(starts, model, sharp, fresh(4, sharp, 3), gen(1))
    assert torch.equal(action.argmax(-1), torch.tensor([2, 1, 0, 1]))


def test_shooting_keeps_the_previous_best_sequence() -> None:
    stay = torch.tensor([[0.0, 1.0, 0.0]])
    model = Point(target=0.0, discrete=True, actor=lambda f: Fixed(f, stay))  # the actor never moves
    right = torch.tensor([0.0, 0.0, 1.0])
    prev = Plan(right.expand(1, 3, 3).clone())
    cfg = MPCConfig(samples=4, elites=4, policy_samples=0)
    start = torch.tensor([[-3.0]])
    action, plan, _ = shooting(start, model, cfg, prev, gen(), deterministic=True)
    assert torch.equal(action[0], right)  # the shifted previous plan beats standing still
    assert torch.equal(plan.mean, prev.mean)  # shifted, its last step a repeat: right, right, right
    action, _, _ = shooting(start, model, cfg, reset_plan(prev, torch.tensor([True])), gen(), True)
    assert torch.equal(action[0], stay[0])  # a reset plan is no candidate


def test_config_is_checked() -> None:
    from dreamrl.config import ConfigError, check_mpc

    with pytest.raises(ConfigError, match=r"agent\.mpc\.elites"):
        check_mpc(MPCConfig(elites=600))
    with pytest.raises(ConfigError, match=r"agent\.mpc\.optimiser"):
        check_mpc(MPCConfig(optimiser="ilqr"))
    with pytest.raises(ValueError):
        mppi(STARTS, Point(), MPCConfig(), initial_plan(5, 4, 1), gen())


# ----------------------------------------------------------------------------- a real world model


@pytest.mark.parametrize("discrete", [True, False])
def test_plans_through_a_dreamrl_world_model(discrete: bool) -> None:
    from dreamrl.agents.dreamer import DreamerAgent
    from dreamrl.config import build_config
    from dreamrl.spaces import Space

    config = build_config(["debug"], {"task": "test", "seed": 0, "compute.device": "cpu"})
    act_space = Space("int32", (), 3) if discrete else Space("float32", (2,))
    agent = DreamerAgent(config, {"vector": Space("float32", (4,))}, act_space)
    model = DreamerPlanModel(agent.wm, agent.ac)
    assert model.discrete == discrete
    n, width = 2, 3 if discrete else 2
    start = agent.wm.initial(n, "cpu")
    cfg = MPCConfig(samples=16, elites=4, policy_samples=4, iterations=2)
    plan = initial_plan(n, cfg.horizon, width)
    for deterministic in (True, False):
        action, plan, info = plan_action(start, model, cfg, plan, gen(), deterministic)
        assert action.shape == (n, width) and info.ret.shape == (n,)
        assert torch.isfinite(info.ret).all()
        if discrete:
            assert torch.equal(action.sum(-1), torch.ones(n))
        else:
            assert (action.abs() <= 1).all()


# ----------------------------------------------------------------------------- what the plan promised


def test_the_planned_rewards_are_the_return_without_the_value() -> None:
    model = Point(target=0.0, value_slope=2.0, cont=0.9)
    feat = torch.tensor([[[5.0], [1.0], [-2.0], [3.0]]])
    ret, rewards = score_parts(model, feat, True)
    assert torch.equal(ret, score(model, feat, True))
    assert torch.allclose(rewards, score(model, feat, False))
    # Each planner reports both for the sequence it acts on: with continue 1 the
    # difference is the value at the horizon, x_H = x_0 + the sum of the actions.
    valued = Point(value_slope=1.0)
    cfg = MPCConfig()
    _, plan, info = mppi(STARTS, valued, cfg, fresh(5, cfg), gen(), deterministic=True)
    assert torch.allclose(info.ret - info.rewards, (STARTS + plan.mean.sum(1))[:, 0], atol=1e-5)
    _, plan, info = shooting(
        STARTS, Point(discrete=True, value_slope=1.0), cfg, fresh(5, cfg, 3), gen(), True
    )
    assert torch.allclose(info.ret - info.rewards, (STARTS + (plan.mean @ MOVES[:, None]).sum(1))[:, 0])
    planet = MPCConfig.planet()
    _, _, info = cem(STARTS, valued, planet, fresh(5, planet), gen())
    assert torch.equal(info.ret, info.rewards)  # rewards only
