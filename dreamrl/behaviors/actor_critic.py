"""Actor-critic learned in imagination: lambda-returns, return normalisation, losses.

The maths follows the paper (section "Critic learning" and "Actor learning") and the
official code's ``imag_loss`` / ``repl_loss``: REINFORCE for every action space with
advantages divided by ``max(1, P95 - P5)`` of the returns, an entropy bonus, a critic
on symexp two-hot targets regularised toward its slow EMA copy, and a second critic
loss on replayed trajectories bootstrapped from the imagined returns.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from dreamrl.config import AgentConfig, RetNormConfig
from dreamrl.nets.heads import ActionDist, PolicyHead, TwoHotHead
from dreamrl.spaces import Space


def lambda_return(
    last: torch.Tensor,
    term: torch.Tensor,
    rew: torch.Tensor,
    boot: torch.Tensor,
    disc: float,
    lam: float,
) -> torch.Tensor:
    """Lambda-returns ``[N, T-1]`` from sequences ``[N, T]``.

    ``R_t = r_{t+1} + c_{t+1} ((1 - l_{t+1}) v_{t+1} + l_{t+1} R_{t+1})`` with
    ``c = (1 - term) * disc``, ``l = (1 - last) * lam``, and ``R_{T-1} = boot_{T-1}``.
    ``rew[:, t]`` is the reward on arriving at step t; ``boot`` holds the values to
    bootstrap from; ``last`` cuts the return where a replayed episode ends.
    """
    live = (1 - term.float())[:, 1:] * disc
    cont = (1 - last.float())[:, 1:] * lam
    interm = rew[:, 1:] + (1 - cont) * live * boot[:, 1:]
    out = boot[:, -1]
    rets = []
    for t in reversed(range(live.shape[1])):
        out = interm[:, t] + live[:, t] * cont[:, t] * out
        rets.append(out)
    return torch.stack(rets[::-1], 1)


class ReturnStats(NamedTuple):
    """EMAs of the lower and upper return percentiles, scalars."""

    lo: torch.Tensor
    hi: torch.Tensor


@torch.no_grad()
def advance_return_stats(stats: ReturnStats, returns: torch.Tensor, cfg: RetNormConfig) -> ReturnStats:
    """The percentile EMAs after one more batch of ``returns`` (any shape); pure."""
    x = returns.detach().float().flatten()
    q = torch.quantile(x, torch.tensor([cfg.perclo / 100, cfg.perchi / 100], device=x.device))
    rate = cfg.rate
    return ReturnStats(stats.lo * (1 - rate) + rate * q[0], stats.hi * (1 - rate) + rate * q[1])


def return_scale(stats: ReturnStats, cfg: RetNormConfig) -> torch.Tensor:
    """What advantages are divided by: ``max(limit, hi - lo)``."""
    return torch.clamp(stats.hi - stats.lo, min=cfg.limit)


class ReturnNormalizer(nn.Module):
    """Holds the return percentiles' EMAs (:class:`ReturnStats`) as buffers, so that
    they are checkpointed; the losses only read them, and the agent commits new ones
    after an update has been found finite."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, cfg: RetNormConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    def current(self) -> ReturnStats:
        """The statistics as they stand (copies: committing later does not change them)."""
        return ReturnStats(self.lo.clone(), self.hi.clone())

    @torch.no_grad()
    def commit(self, stats: ReturnStats) -> None:
        self.lo.copy_(stats.lo)
        self.hi.copy_(stats.hi)

    def update(self, returns: torch.Tensor) -> None:
        """Advance the EMAs by one batch of ``returns`` and keep them."""
        self.commit(advance_return_stats(self.current(), returns, self.cfg))

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(offset, scale)``; advantages are divided by ``scale``."""
        return self.lo.clone(), return_scale(self.current(), self.cfg)


class Imagined(NamedTuple):
    """A trajectory the actor-critic learns from, every tensor ``[N, H+1, ...]``: imagined
    by the world model (the paper's), or replayed (``agent.ac_data=replay``, which gives
    ``last``)."""

    action: torch.Tensor  # actions taken from each state (the last one is unused)
    reward: torch.Tensor  # reward on arriving at each state (predicted, or real)
    cont: torch.Tensor  # continue probability (discount folded in under agent.contdisc)
    # Replayed trajectories only: where an episode ends. Returns are cut there and every
    # step is weighted 1 but those (a replayed state is real; no imagined end discounts it).
    last: torch.Tensor | None = None


def imagined_continue(cont: torch.Tensor, cfg: AgentConfig) -> torch.Tensor:
    """The continue probabilities ``[...]`` the behaviour reads from the head's ``cont``:
    the head's own, or with ``agent.imag_continue=false`` those of an episode that never
    ends (the discount alone where it is folded in, else 1)."""
    if cfg.imag_continue:
        return cont
    return torch.full_like(cont, 1 - 1 / cfg.horizon if cfg.contdisc else 1.0)


class ImagLoss(NamedTuple):
    """What :func:`imag_loss` gives back."""

    losses: dict[str, torch.Tensor]  # {policy, value: [N, H]}, unscaled
    returns: torch.Tensor  # lambda-returns [N, H]
    return_stats: ReturnStats  # the normaliser's statistics with these returns taken in
    metrics: dict[str, torch.Tensor]


def imag_loss(
    traj: Imagined,
    policy: ActionDist,
    value_logits: torch.Tensor,
    slow_logits: torch.Tensor,
    critic: TwoHotHead,
    return_stats: ReturnStats,
    cfg: AgentConfig,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ImagLoss:
    """Actor and critic losses on imagined trajectories; pure (nothing is updated).

    ``policy`` is the actor's distribution at every imagined state ``[N, H+1]``;
    ``value_logits`` and ``slow_logits`` ``[N, H+1, bins]`` are the critic's and the
    slow critic's outputs there. As in the paper, advantages are divided by the scale of
    the return statistics *after* this batch's returns are taken in; those statistics
    come back for the caller to keep once the update has been found finite. In
    data-parallel training ``gather`` gives every rank's returns ``[ranks * N, H]``, so that
    the percentiles are those of all the ranks' batches together, as one process would
    take them.
    """
    lcfg = cfg.imag_loss
    with torch.no_grad():
        val = critic.mean(value_logits)
        slowval = critic.mean(slow_logits)
        tarval = slowval if lcfg.slowtar else val
        disc = 1.0 if cfg.contdisc else 1 - 1 / cfg.horizon
        if traj.last is None:
            last = torch.zeros_like(traj.cont)
            weight = torch.cumprod(disc * traj.cont, 1) / disc  # [N, H+1]
        else:
            last = traj.last.float()
            weight = 1 - last
        ret = lambda_return(last, 1 - traj.cont, traj.reward, tarval, disc, lcfg.lam)
        new_stats = advance_return_stats(return_stats, gather(ret) if gather else ret, cfg.retnorm)
        scale = return_scale(new_stats, cfg.retnorm)
        adv = (ret - tarval[:, :-1]) / scale
    logpi = policy.logp(traj.action)[:, :-1]
    ent = policy.entropy()[:, :-1]
    losses = {
        "policy": weight[:, :-1] * -(logpi * adv + lcfg.actent * ent),
        "value": weight[:, :-1]
        * (
            critic.loss(value_logits, torch.cat([ret, torch.zeros_like(ret[:, -1:])], 1))
            + lcfg.slowreg * critic.loss(value_logits, slowval)
        )[:, :-1],
    }
    with torch.no_grad():
        metrics = {
            "actor/ent": ent.mean(),
            "actor/adv_mag": adv.abs().mean(),
            "imag/ret": ret.mean(),
            "imag/ret_scale": scale,
            "imag/val": val.mean(),
            "imag/rew": traj.reward.mean(),
            "imag/con": traj.cont.mean(),
            "imag/weight": weight.mean(),
        }
    return ImagLoss(losses, ret, new_stats, metrics)


def repl_loss(
    last: torch.Tensor,
    term: torch.Tensor,
    rew: torch.Tensor,
    boot: torch.Tensor,
    value_logits: torch.Tensor,
    slow_logits: torch.Tensor,
    critic: TwoHotHead,
    cfg: AgentConfig,
) -> dict[str, torch.Tensor]:
    """Critic loss ``{repval: [B, T-1]}`` on replayed sequences ``[B, T]``.

    Returns are lambda-returns over the real rewards, bootstrapped from ``boot`` (the
    imagined return from each replayed state) and cut where an episode ended.
    """
    lcfg = cfg.repl_loss
    with torch.no_grad():
        slowval = critic.mean(slow_logits)
        disc = 1 - 1 / cfg.horizon
        weight = 1 - last.float()
        ret = lambda_return(last, term, rew, boot, disc, lcfg.lam)
        target = torch.cat([ret, torch.zeros_like(ret[:, -1:])], 1)
    loss = critic.loss(value_logits, target) + lcfg.slowreg * critic.loss(value_logits, slowval)
    return {"repval": weight[:, :-1] * loss[:, :-1]}


class ActorCritic(nn.Module):
    """Actor, critic, slow critic and return normaliser."""

    slow_updates: torch.Tensor

    def __init__(self, feat_dim: int, act_space: Space, cfg: AgentConfig):
        super().__init__()
        self.cfg = cfg
        self.actor = PolicyHead(feat_dim, act_space, cfg.policy)
        self.critic = TwoHotHead(feat_dim, cfg.value)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.retnorm = ReturnNormalizer(cfg.retnorm)
        self.register_buffer("slow_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        """Move the slow critic toward the critic by ``slowvalue.rate`` (every
        ``slowvalue.every`` calls)."""
        cfg = self.cfg.slowvalue
        if int(self.slow_updates) % cfg.every == 0:
            src: list[torch.Tensor] = list(self.critic.parameters())
            dst: list[torch.Tensor] = list(self.slow_critic.parameters())
            torch._foreach_lerp_(dst, src, cfg.rate)
        self.slow_updates += 1
