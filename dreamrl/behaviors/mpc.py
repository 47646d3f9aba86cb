"""Latent model-predictive control: plan a few steps ahead in a world model, act, replan.

Three planners share one interface and one scoring rule:

- :func:`mppi`, TD-MPC2's planner for continuous actions: Gaussian proposals around a
  warm-started mean, a share of trajectories proposed by the actor, the top ``elites``
  refit with weights ``softmax(temperature * return)``, rewards plus the critic's value
  at the horizon.
- :func:`cem`, PlaNet's cross-entropy method: zero-mean unit-std proposals, the top
  ``elites`` refit without weights, rewards only, the refit mean's first action.
- :func:`shooting`, for discrete (one-hot) actions: random shooting over sequences
  drawn by rolling the actor through the model, plus the previous best sequence shifted.

The planners are pure functions: everything carried from one env step to the next is the
:class:`Plan` passed in and given back, and every random draw comes from the
``generator`` passed in. They see the world through :class:`PlanModel`, which
:class:`DreamerPlanModel` builds from a :class:`~dreamrl.world_models.base.WorldModel`
and an :class:`~dreamrl.behaviors.actor_critic.ActorCritic`; a hand-made model with the
same five members plans just as well (the tests use exact toy dynamics). What planning
costs and how its plans come true is measured by :mod:`dreamrl.behaviors.plan_stats`.

Shapes: ``N`` envs, ``S`` candidate sequences per env, ``H`` steps, ``A`` action width,
``F`` feature width. Candidates are held as ``[N, S, H, A]`` and evaluated flattened,
``[N*S, ...]``, with env ``n``'s candidates in rows ``n*S ... n*S + S - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch

from dreamrl.behaviors.actor_critic import ActorCritic, imagined_continue
from dreamrl.behaviors.plan_stats import PlanStats
from dreamrl.config import MPCConfig
from dreamrl.world_models.base import Policy, State, WorldModel, map_state

# ----------------------------------------------------------------------------- the model


class Sampler(Protocol):
    """An action distribution as the planner uses it (``ActionDist`` is one)."""

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor: ...

    def mode(self) -> torch.Tensor: ...


class PlanModel(Protocol):
    """What a planner needs of a world model and its actor-critic.

    ``imagine`` takes the actions ``[M, H, A]`` or a policy ``features [M, F] -> [M, A]``
    and returns the features ``[M, H+1, F]`` (the start's first) and the actions taken;
    the heads read features ``[..., F]`` and return ``[...]``: ``reward`` the reward on
    arriving at a state, ``cont`` the probability of going on after it *with the discount
    folded in*, ``value`` the expected return from it on.
    """

    @property
    def discrete(self) -> bool: ...

    def imagine(
        self, start: State, policy: Policy, horizon: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def reward(self, feat: torch.Tensor) -> torch.Tensor: ...

    def cont(self, feat: torch.Tensor) -> torch.Tensor: ...

    def value(self, feat: torch.Tensor) -> torch.Tensor: ...

    def actor(self, feat: torch.Tensor) -> Sampler: ...


@dataclass(frozen=True)
class DreamerPlanModel:
    """:class:`PlanModel` of a dreamrl world model and actor-critic, read exactly as
    :func:`~dreamrl.behaviors.actor_critic.imag_loss` reads them: reward
    ``wm.reward.mean(wm.reward(feat))``, continue ``disc * sigmoid(wm.cont(feat))`` with
    ``disc = 1`` under ``agent.contdisc`` (else ``1 - 1/horizon``; the head is not read
    under ``agent.imag_continue=false``), value the two-hot
    mean of the critic (the slow critic under ``imag_loss.slowtar``)."""

    wm: WorldModel
    ac: ActorCritic

    @property
    def discrete(self) -> bool:
        return self.ac.actor.discrete

    def imagine(
        self, start: State, policy: Policy, horizon: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.wm.imagine(start, policy, horizon, generator)

    def reward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.wm.reward.mean(self.wm.reward(feat))

    def cont(self, feat: torch.Tensor) -> torch.Tensor:
        cfg = self.ac.cfg
        disc = 1.0 if cfg.contdisc else 1 - 1 / cfg.horizon
        return disc * imagined_continue(torch.sigmoid(self.wm.cont(feat)), cfg)

    def value(self, feat: torch.Tensor) -> torch.Tensor:
        critic = self.ac.slow_critic if self.ac.cfg.imag_loss.slowtar else self.ac.critic
        return self.ac.critic.mean(critic(feat))

    def actor(self, feat: torch.Tensor) -> Sampler:
        return self.ac.actor(feat)


# ----------------------------------------------------------------------------- plans


class Plan(NamedTuple):
    """What a planner carries from one env step to the next."""

    mean: torch.Tensor  # [N, H, A]: the last refit mean (shooting: the chosen sequence), unshifted


class PlanInfo(NamedTuple):
    """What a planner reports about the sequence it acted on, for comparison with the actor."""

    ret: torch.Tensor  # [N] the planned return (:func:`score`) of the chosen sequence
    first: torch.Tensor  # [N, A] the chosen sequence's first action, before exploration noise
    std: torch.Tensor  # [N, A] the proposal's std at the first step (zeros for shooting)
    rewards: torch.Tensor  # [N] its predicted discounted rewards alone, without the value (score_parts)


def initial_plan(n: int, horizon: int, action_dim: int, device: torch.device | str | None = None) -> Plan:
    """The plan before anything is known: zero means ``[n, horizon, action_dim]``."""
    return Plan(torch.zeros(n, horizon, action_dim, device=device))


def shift(plan: Plan) -> Plan:
    """The warm start (TD-MPC2): the mean moved one step earlier, its last step zero."""
    mean = torch.cat([plan.mean[:, 1:], torch.zeros_like(plan.mean[:, :1])], 1)
    return Plan(mean)


def reset_plan(plan: Plan, is_first: torch.Tensor) -> Plan:
    """``plan`` with the rows of envs starting an episode (``is_first [N]``) zeroed."""
    keep = (~is_first.bool()).to(plan.mean.dtype)[:, None, None]
    return Plan(plan.mean * keep)


# ----------------------------------------------------------------------------- scoring


def score(model: PlanModel, feat: torch.Tensor, use_value: bool) -> torch.Tensor:
    """Predicted return ``[M]`` of imagined trajectories ``feat [M, H+1, F]``.

    With ``r_t = reward(feat[:, t])``, ``c_t = cont(feat[:, t])`` and
    ``v_H = value(feat[:, H])``::

        R = sum_{t=1..H} (prod_{k=1..t-1} c_k) r_t  +  use_value * (prod_{k=1..H} c_k) v_H

    This is dreamrl's lambda-return from the start (``lambda_return`` with lambda = 1):
    ``R_t = r_{t+1} + c_{t+1} R_{t+1}``, ``R_H = v_H``. The reward of step t is the one
    for arriving at state t, so the start's own reward and continue (``t = 0``, shared
    by every candidate from one start) are not counted, and the value at the horizon is
    weighted by ``c_H`` too: it counts only if the episode goes on after state H.
    """
    return score_parts(model, feat, use_value)[0]


def score_parts(model: PlanModel, feat: torch.Tensor, use_value: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score` ``[M]`` and its first term alone, the predicted discounted rewards
    over the horizon ``[M]`` (what the env can pay back within ``H`` steps, set against
    the rewards received by :mod:`dreamrl.behaviors.plan_stats`)."""
    nxt = feat[:, 1:]
    rew = model.reward(nxt).float()  # [M, H]
    cont = model.cont(nxt).float()  # [M, H]
    alive = torch.cumprod(cont, 1)
    before = torch.cat([torch.ones_like(alive[:, :1]), alive[:, :-1]], 1)
    rewards = (before * rew).sum(1)
    if not use_value:
        return rewards, rewards
    return rewards + alive[:, -1] * model.value(feat[:, -1]).float(), rewards


# ----------------------------------------------------------------------------- helpers


def _repeat(start: State, times: int) -> State:
    """Each env's state repeated ``times`` times, ``[N*times, ...]`` (env-major)."""
    return map_state(lambda t: t.repeat_interleave(times, 0), start)


def _evaluate(
    start: State, model: PlanModel, actions: torch.Tensor, use_value: bool, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score_parts` ``[N, S]`` of the candidates ``actions [N, S, H, A]`` from
    ``start [N, ...]``: all ``N*S`` imagined in one batch."""
    N, S, H, _ = actions.shape
    feat, _ = model.imagine(_repeat(start, S), actions.flatten(0, 1), H, gen)
    ret, rewards = score_parts(model, feat, use_value)
    return ret.view(N, S).nan_to_num(0.0), rewards.view(N, S).nan_to_num(0.0)


def _actor_rollouts(
    start: State, model: PlanModel, count: int, horizon: int, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` action sequences per env ``[N, count, H, A]`` sampled by rolling the
    actor through the model, and their features ``[N*count, H+1, F]``."""

    def act(feat: torch.Tensor) -> torch.Tensor:
        action = model.actor(feat).sample(gen)
        return action if model.discrete else action.clamp(-1, 1)

    feat, actions = model.imagine(_repeat(start, count), act, horizon, gen)
    return actions.unflatten(0, (-1, count)), feat


def _randn(shape: tuple[int, ...], like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=like.device, dtype=like.dtype)


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx [N, K]`` of candidates ``x [N, S, H, A]`` -> ``[N, K, H, A]``."""
    return x.gather(1, idx[:, :, None, None].expand(-1, -1, *x.shape[2:]))


def _check(plan: Plan, cfg: MPCConfig) -> None:
    if plan.mean.dim() != 3 or plan.mean.shape[1] != cfg.horizon:
        raise ValueError(f"plan mean {tuple(plan.mean.shape)}: expected [N, {cfg.horizon}, A]")


# ----------------------------------------------------------------------------- planners


class _Refined(NamedTuple):
    """What :func:`_refine` ends with."""

    mean: torch.Tensor  # [N, H, A] the final mean
    std: torch.Tensor  # [N, H, A] the final std
    elites: torch.Tensor  # [N, K, H, A] the last iteration's elites
    ret: torch.Tensor  # [N, K] their returns
    rewards: torch.Tensor  # [N, K] their predicted rewards alone (score_parts)
    weights: torch.Tensor  # [N, K] their weights


def _refine(
    start: State,
    model: PlanModel,
    cfg: MPCConfig,
    plan: Plan,
    gen: torch.Generator | None,
    weighted: bool,
    use_value: bool,
) -> _Refined:
    """The iterations shared by MPPI and CEM (the mean itself as the one elite when
    ``iterations == 0``)."""
    _check(plan, cfg)
    mean = (shift(plan).mean if cfg.warm_start else torch.zeros_like(plan.mean)).clamp(-1, 1)
    N, H, A = mean.shape
    std = torch.full_like(mean, cfg.max_std)
    S, P, K = cfg.samples, cfg.policy_samples, cfg.elites
    pi = _actor_rollouts(start, model, P, H, gen)[0] if P > 0 else mean.new_zeros(N, 0, H, A)
    elites = mean[:, None]
    elite_ret = elite_rew = torch.zeros(N, 1, device=mean.device)
    weights = torch.ones_like(elite_ret)
    for _ in range(cfg.iterations):
        noise = _randn((N, S - P, H, A), mean, gen)
        actions = torch.cat([pi.to(mean.dtype), (mean[:, None] + std[:, None] * noise).clamp(-1, 1)], 1)
        ret, rew = _evaluate(start, model, actions, use_value, gen)  # [N, S]
        elite_ret, idx = ret.topk(K, dim=1)
        elite_rew = rew.gather(1, idx)
        elites = _gather(actions, idx)
        if weighted:  # exp(temperature * (R - max R)), normalised
            weights = torch.softmax(cfg.temperature * elite_ret, 1)
        else:
            weights = torch.full_like(elite_ret, 1 / K)
        w = weights[:, :, None, None]
        mean = (w * elites).sum(1)
        std = (w * (elites - mean[:, None]) ** 2).sum(1).sqrt().clamp(cfg.min_std, cfg.max_std)
    if cfg.iterations == 0:
        elite_ret, elite_rew = _evaluate(start, model, elites, use_value, gen)
    return _Refined(mean, std, elites, elite_ret, elite_rew, weights)


def _score_mean(
    start: State, model: PlanModel, cfg: MPCConfig, r: _Refined, use_value: bool, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score_parts` ``[N]`` of the final mean sequence (scored once more, unless
    it is the one elite already scored)."""
    if cfg.iterations == 0:
        return r.ret[:, 0], r.rewards[:, 0]
    ret, rew = _evaluate(start, model, r.mean[:, None], use_value, gen)
    return ret[:, 0], rew[:, 0]


def mppi(
    start: State,
    model: PlanModel,
    cfg: MPCConfig,
    plan: Plan,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
) -> tuple[torch.Tensor, Plan, PlanInfo]:
    """TD-MPC2's MPPI for continuous actions in [-1, 1], from states ``start [N, ...]``.

    Per env step: ``policy_samples`` sequences rolled out by the actor (drawn once, kept
    through the iterations); the mean starts from ``shift(plan)`` (``warm_start``) and
    the std at ``max_std``. Each of ``iterations``: ``samples - policy_samples`` proposals
    ``clamp(mean + std * eps, -1, 1)``, all scored by :func:`score` with the value, the
    top ``elites`` weighted ``softmax(temperature * R)``, the mean and std refit to the
    weighted elites, std clamped to ``[min_std, max_std]``.

    The action: stochastic (TD-MPC2's training mode), one last-iteration elite drawn by
    its weight, its first action plus ``std[0] * eps``, clamped; ``deterministic``, the
    final weighted mean's first action (TD-MPC2's eval mode still draws an elite; the
    mean is the lower-variance choice, and its return is scored once more for ``info``).
    Returns ``(action [N, A], Plan(final mean), info)``; pass that plan to the next call.
    """
    with torch.no_grad():
        r = _refine(start, model, cfg, plan, generator, weighted=True, use_value=True)
        if deterministic:
            first = action = r.mean[:, 0]
            ret, rewards = _score_mean(start, model, cfg, r, True, generator)
        else:
            pick = torch.multinomial(r.weights, 1, generator=generator)  # [N, 1]
            first = _gather(r.elites, pick)[:, 0, 0]
            ret, rewards = r.ret.gather(1, pick)[:, 0], r.rewards.gather(1, pick)[:, 0]
            action = (first + r.std[:, 0] * _randn(tuple(first.shape), first, generator)).clamp(-1, 1)
    return action, Plan(r.mean), PlanInfo(ret, first, r.std[:, 0], rewards)


def cem(
    start: State,
    model: PlanModel,
    cfg: MPCConfig,
    plan: Plan,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, Plan, PlanInfo]:
    """PlaNet's cross-entropy method (use ``MPCConfig.planet()``), from ``start [N, ...]``.

    Each of ``iterations``: ``samples`` proposals ``clamp(mean + std * eps, -1, 1)``
    scored by :func:`score` on rewards alone (no value), the top ``elites`` refit
    unweighted (mean and population std, std clamped to ``[min_std, max_std]``; PlaNet
    adds 1e-6 to the variance instead). The mean starts at zero (``shift(plan)`` with
    ``warm_start``), the std at ``max_std`` (1). The action is the final mean's first
    step, with no noise: PlaNet explores by adding noise outside the planner. The
    planned return in ``info`` is that of the final mean sequence.
    """
    with torch.no_grad():
        r = _refine(start, model, cfg, plan, generator, weighted=False, use_value=False)
        ret, rewards = _score_mean(start, model, cfg, r, False, generator)
    return r.mean[:, 0], Plan(r.mean), PlanInfo(ret, r.mean[:, 0], r.std[:, 0], rewards)


def shooting(
    start: State,
    model: PlanModel,
    cfg: MPCConfig,
    plan: Plan,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
) -> tuple[torch.Tensor, Plan, PlanInfo]:
    """Random shooting for discrete actions (one-hot ``[N, A]``), from ``start [N, ...]``.

    Candidates: ``samples`` sequences of one-hot actions sampled by rolling the actor
    through the model, plus the previous best sequence shifted by one step (its last
    step a repeat of the one before; left out for envs whose plan is zero, as after
    :func:`reset_plan`). All are scored by :func:`score` with the value. The action is
    the first of the best sequence (``deterministic``) or of one drawn with probabilities
    ``softmax(temperature * R)``. ``iterations``, ``elites`` and the std bounds are not
    used. Returns ``(action [N, A], Plan(chosen sequence), info)``.
    """
    with torch.no_grad():
        _check(plan, cfg)
        H, S = cfg.horizon, cfg.samples
        seqs, feat = _actor_rollouts(start, model, S, H, generator)  # [N, S, H, A]
        N = seqs.shape[0]
        ret, rew = (x.view(N, S).nan_to_num(0.0) for x in score_parts(model, feat, True))
        if cfg.warm_start and H > 1:
            warm = shift(plan).mean.to(seqs.dtype)
            warm = torch.cat([warm[:, :-1], warm[:, -2:-1]], 1)[:, None]  # [N, 1, H, A]
            valid = warm[:, 0, 0].sum(-1) > 0.5  # one-hot first step
            warm_ret, warm_rew = _evaluate(start, model, warm, True, generator)
            warm_ret = torch.where(valid[:, None], warm_ret, torch.full_like(warm_ret, -torch.inf))
            seqs, ret, rew = (
                torch.cat([seqs, warm], 1),
                torch.cat([ret, warm_ret], 1),
                torch.cat([rew, warm_rew], 1),
            )
        if deterministic:
            pick = ret.argmax(1, keepdim=True)
        else:
            pick = torch.multinomial(torch.softmax(cfg.temperature * ret, 1), 1, generator=generator)
        chosen = _gather(seqs, pick)[:, 0]  # [N, H, A]
        first = chosen[:, 0]
        info = PlanInfo(ret.gather(1, pick)[:, 0], first, torch.zeros_like(first), rew.gather(1, pick)[:, 0])
    return first, Plan(chosen), info


def plan_action(
    start: State,
    model: PlanModel,
    cfg: MPCConfig,
    plan: Plan,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
) -> tuple[torch.Tensor, Plan, PlanInfo]:
    """The planner for ``model`` and ``cfg``: :func:`shooting` for discrete actions,
    else :func:`mppi` or :func:`cem` by ``cfg.optimiser`` (CEM is deterministic)."""
    if model.discrete:
        return shooting(start, model, cfg, plan, generator, deterministic)
    if cfg.optimiser == "cem":
        return cem(start, model, cfg, plan, generator)
    return mppi(start, model, cfg, plan, generator, deterministic)


__all__ = [
    "DreamerPlanModel",
    "MPCConfig",
    "Plan",
    "PlanInfo",
    "PlanModel",
    "PlanStats",
    "Sampler",
    "cem",
    "initial_plan",
    "mppi",
    "plan_action",
    "reset_plan",
    "score",
    "score_parts",
    "shift",
    "shooting",
]
