"""Actor-critic learned in imagination: lambda-returns, return normalisation, losses.

The maths follows the paper (section "Critic learning" and "Actor learning") and the
official code's ``imag_loss`` / ``repl_loss``: REINFORCE for every action space with
advantages divided by ``max(1, P95 - P5)`` of the returns, an entropy bonus, a critic
on symexp two-hot targets regularised toward its slow EMA copy, and a second critic
loss on replayed trajectories bootstrapped from the imagined returns.
"""

from __future__ import annotations

import copy
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


class ReturnNormalizer(nn.Module):
    """EMA of the 5th and 95th return percentiles; scale ``max(limit, hi - lo)``."""

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, cfg: RetNormConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    @torch.no_grad()
    def update(self, returns: torch.Tensor) -> None:
        x = returns.detach().float().flatten()
        q = torch.quantile(x, torch.tensor([self.cfg.perclo / 100, self.cfg.perchi / 100], device=x.device))
        rate = self.cfg.rate
        self.lo.mul_(1 - rate).add_(rate * q[0])
        self.hi.mul_(1 - rate).add_(rate * q[1])

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(offset, scale)``; advantages are divided by ``scale``."""
        return self.lo.clone(), torch.clamp(self.hi - self.lo, min=self.cfg.limit)


class Imagined(NamedTuple):
    """An imagined trajectory's predictions, every tensor ``[N, H+1, ...]``."""

    action: torch.Tensor  # actions taken from each state (the last one is unused)
    reward: torch.Tensor  # predicted reward on arriving at each state
    cont: torch.Tensor  # predicted continue probability (discount folded in)


def imag_loss(
    traj: Imagined,
    policy: ActionDist,
    value_logits: torch.Tensor,
    slow_logits: torch.Tensor,
    critic: TwoHotHead,
    retnorm: ReturnNormalizer,
    cfg: AgentConfig,
    update: bool = True,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """Actor and critic losses ``{policy, value: [N, H]}`` on imagined trajectories,
    the lambda-returns ``[N, H]`` and metrics.

    ``policy`` is the actor's distribution at every imagined state ``[N, H+1]``;
    ``value_logits`` and ``slow_logits`` ``[N, H+1, bins]`` are the critic's and the
    slow critic's outputs there.
    """
    lcfg = cfg.imag_loss
    with torch.no_grad():
        val = critic.mean(value_logits)
        slowval = critic.mean(slow_logits)
        tarval = slowval if lcfg.slowtar else val
        disc = 1.0 if cfg.contdisc else 1 - 1 / cfg.horizon
        weight = torch.cumprod(disc * traj.cont, 1) / disc  # [N, H+1]
        ret = lambda_return(torch.zeros_like(traj.cont), 1 - traj.cont, traj.reward, tarval, disc, lcfg.lam)
        if update:
            retnorm.update(ret)
        _, scale = retnorm.stats()
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
    return losses, ret, metrics


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
