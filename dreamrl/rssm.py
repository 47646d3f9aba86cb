"""The recurrent state-space model (RSSM) of DreamerV3.

State ``(h, z)``: ``h`` is the deterministic path, a block-diagonal GRU of ``deter``
units in ``blocks`` groups; ``z`` is ``stoch`` categorical variables of ``classes``
classes each, held as one-hot vectors with straight-through gradients and 1% of
uniform mixed into their distributions.

- ``core``: ``h_t = f(h_{t-1}, z_{t-1}, a_{t-1})``
- prior (imagination): ``p(z_t | h_t)``
- posterior (observation): ``q(z_t | h_t, e_t)`` with ``e_t`` the observation embedding
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from dreamrl.config import RSSMConfig
from dreamrl.nets import distributions as D
from dreamrl.nets.layers import BlockLinear, Linear, NormAct, RMSNorm, mlp


class Latent(NamedTuple):
    """Model state: ``deter [..., D]`` and one-hot ``stoch [..., S, C]``."""

    deter: torch.Tensor
    stoch: torch.Tensor

    def features(self) -> torch.Tensor:
        """``[..., D + S*C]``: what every head reads."""
        return torch.cat([self.deter, self.stoch.flatten(-2)], -1)

    def detach(self) -> "Latent":
        return Latent(self.deter.detach(), self.stoch.detach())

    def flatten_batch(self) -> "Latent":
        """``[B, T, ...] -> [B*T, ...]``."""
        return Latent(self.deter.flatten(0, 1), self.stoch.flatten(0, 1))

    def index(self, i: int | slice) -> "Latent":
        """Select along the time axis (dim 1)."""
        return Latent(self.deter[:, i], self.stoch[:, i])


class Observed(NamedTuple):
    """What :meth:`RSSM.observe` returns for a ``[B, T]`` sequence."""

    posterior: Latent  # [B, T, ...]
    post_logits: torch.Tensor  # [B, T, S, C]
    prior_logits: torch.Tensor  # [B, T, S, C]
    last: Latent  # [B, ...]: state after the final step, to continue from


def kl_losses(
    post_logits: torch.Tensor, prior_logits: torch.Tensor, free_nats: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two KL terms of the paper (eq. 5), each clipped below at ``free_nats``.

    ``dyn = max(free, KL(sg(post) || prior))`` trains the prior only;
    ``rep = max(free, KL(post || sg(prior)))`` trains the posterior only.
    Inputs ``[..., S, C]`` (log-probs), outputs ``[...]`` summed over the S latents.
    """
    dyn = D.categorical_kl(post_logits.detach(), prior_logits)
    rep = D.categorical_kl(post_logits, prior_logits.detach())
    if free_nats:
        dyn = dyn.clamp_min(free_nats)
        rep = rep.clamp_min(free_nats)
    return dyn, rep


def normalise_action(action: torch.Tensor) -> torch.Tensor:
    """Divide each entry by ``max(1, |a|)``: keeps unclipped samples inside [-1, 1]."""
    return action / action.detach().abs().clamp_min(1.0)


class RSSM(nn.Module):
    """Block-GRU RSSM over ``embed`` observation embeddings and ``action_dim`` actions."""

    def __init__(self, cfg: RSSMConfig, embed: int, action_dim: int):
        super().__init__()
        if cfg.obslayers < 1:
            raise ValueError("agent.dyn.rssm.obslayers must be at least 1")
        self.cfg = cfg
        d, h, g = cfg.deter, cfg.hidden, cfg.blocks
        self.stoch_flat = cfg.stoch * cfg.classes
        # GRU inputs: deter, stoch and action each through their own NormAct unit.
        self.in_deter = NormAct(d, h)
        self.in_stoch = NormAct(self.stoch_flat, h)
        self.in_action = NormAct(action_dim, h)
        # Each of the g blocks sees its slice of deter plus all three input units.
        block_in = d + 3 * h * g
        self.gru_hidden = nn.ModuleList()
        self.gru_norms = nn.ModuleList()
        for i in range(cfg.dynlayers):
            self.gru_hidden.append(BlockLinear(block_in if i == 0 else d, d, g))
            self.gru_norms.append(RMSNorm(d))
        self.gru_gates = BlockLinear(d if cfg.dynlayers else block_in, 3 * d, g)
        # Prior p(z | h).
        self.prior_mlp = mlp(d, cfg.imglayers, h)
        self.prior_out = Linear(h if cfg.imglayers else d, self.stoch_flat, cfg.outscale)
        # Posterior q(z | h, e): the first layer's weight splits into an h part and an
        # e part so the e part can run on the whole sequence at once, outside the scan.
        self.post_in = Linear(d + embed, h)
        self.post_norm = RMSNorm(h)
        self.post_mlp = mlp(h, cfg.obslayers - 1, h)
        self.post_out = Linear(h, self.stoch_flat, cfg.outscale)

    # ------------------------------------------------------------------ pieces

    def initial(self, batch: int, device: torch.device | str) -> Latent:
        """All-zero state ``[batch, ...]``."""
        c = self.cfg
        return Latent(
            torch.zeros(batch, c.deter, device=device),
            torch.zeros(batch, c.stoch, c.classes, device=device),
        )

    def embed_action(self, action: torch.Tensor) -> torch.Tensor:
        """``action [..., A] -> [..., hidden]``, the GRU's action input."""
        return self.in_action(normalise_action(action))

    def core(self, deter: torch.Tensor, stoch: torch.Tensor, action_in: torch.Tensor) -> torch.Tensor:
        """One GRU step: ``deter [N, D]``, ``stoch [N, S, C]``, embedded action
        ``[N, hidden]`` -> next ``deter [N, D]``."""
        g = self.cfg.blocks
        n, d = deter.shape
        inputs = torch.cat([self.in_deter(deter), self.in_stoch(stoch.flatten(-2)), action_in], -1)
        x = torch.cat([deter.view(n, g, d // g), inputs[:, None].expand(n, g, inputs.shape[-1])], -1)
        x = x.view(n, -1)
        for linear, norm in zip(self.gru_hidden, self.gru_norms):
            x = F.silu(norm(linear(x)))
        gates = self.gru_gates(x).view(n, g, 3, d // g)
        reset = torch.sigmoid(gates[:, :, 0].reshape(n, d))
        cand = torch.tanh(reset * gates[:, :, 1].reshape(n, d))
        update = torch.sigmoid(gates[:, :, 2].reshape(n, d) - 1.0)
        return update * cand + (1 - update) * deter

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        """``deter [..., D] -> log-probs [..., S, C]`` of the prior (unimix applied)."""
        x = self.prior_out(self.prior_mlp(deter))
        return D.unimix_logits(x.unflatten(-1, (self.cfg.stoch, self.cfg.classes)), self.cfg.unimix)

    def project_embed(self, embed: torch.Tensor) -> torch.Tensor:
        """The embedding's share of the posterior's first layer, ``[..., hidden]``."""
        weight = self.post_in.weight[:, self.cfg.deter :]
        return F.linear(embed, weight, self.post_in.bias)

    def posterior_logits(self, deter: torch.Tensor, embed_proj: torch.Tensor) -> torch.Tensor:
        """``deter [N, D]`` and projected embedding ``[N, hidden]`` -> log-probs ``[N, S, C]``."""
        x = F.linear(deter, self.post_in.weight[:, : self.cfg.deter]) + embed_proj
        x = self.post_out(self.post_mlp(F.silu(self.post_norm(x))))
        return D.unimix_logits(x.unflatten(-1, (self.cfg.stoch, self.cfg.classes)), self.cfg.unimix)

    # ------------------------------------------------------------------ rollouts

    def observe(
        self,
        start: Latent,
        embed: torch.Tensor,
        prev_action: torch.Tensor,
        is_first: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Observed:
        """Filter a sequence: ``embed [B, T, E]``, ``prev_action [B, T, A]`` (the action
        taken before each step), ``is_first [B, T]`` (resets state and action to zero).
        """
        B, T = is_first.shape
        keep = (~is_first.bool()).float()
        prev_action = prev_action * keep[..., None]
        action_in = self.embed_action(prev_action)  # [B, T, hidden], whole sequence at once
        embed_proj = self.project_embed(embed)  # [B, T, hidden]
        deter, stoch = start
        deters, stochs, logits = [], [], []
        for t in range(T):
            k = keep[:, t, None]
            deter = self.core(deter * k, stoch * k[..., None], action_in[:, t])
            logit = self.posterior_logits(deter, embed_proj[:, t])
            stoch = D.sample_onehot(logit, generator)
            deters.append(deter)
            stochs.append(stoch)
            logits.append(logit)
        deter_seq = torch.stack(deters, 1)
        posterior = Latent(deter_seq, torch.stack(stochs, 1))
        return Observed(
            posterior=posterior,
            post_logits=torch.stack(logits, 1),
            prior_logits=self.prior_logits(deter_seq),
            last=Latent(deter, stoch),
        )

    def obs_step(
        self,
        state: Latent,
        prev_action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> Latent:
        """One filtering step for acting: all inputs ``[N, ...]``, returns ``[N, ...]``."""
        keep = (~is_first.bool()).float()[:, None]
        deter = self.core(
            state.deter * keep, state.stoch * keep[..., None], self.embed_action(prev_action * keep)
        )
        logit = self.posterior_logits(deter, self.project_embed(embed))
        stoch = D.sample_onehot(logit, generator) if sample else D.mode_onehot(logit)
        return Latent(deter, stoch)

    def img_step(
        self, state: Latent, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> Latent:
        """One imagined step from ``state [N, ...]`` under ``action [N, A]``."""
        deter = self.core(state.deter, state.stoch, self.embed_action(action))
        stoch = D.sample_onehot(self.prior_logits(deter), generator)
        return Latent(deter, stoch)

    def imagine(
        self,
        start: Latent,
        policy: Callable[[Latent], torch.Tensor] | torch.Tensor,
        horizon: int,
        generator: torch.Generator | None = None,
    ) -> tuple[Latent, torch.Tensor]:
        """Roll the prior forward ``horizon`` steps from ``start [N, ...]``.

        ``policy`` is a function of the state giving an action ``[N, A]``, or a tensor
        ``[N, horizon, A]`` of given actions. Returns states ``[N, horizon+1, ...]``
        (the start first) and the actions ``[N, horizon, A]`` taken between them.
        """
        state = start
        deters, stochs, actions = [start.deter], [start.stoch], []
        for t in range(horizon):
            action = policy(state) if callable(policy) else policy[:, t]
            state = self.img_step(state, action, generator)
            deters.append(state.deter)
            stochs.append(state.stoch)
            actions.append(action)
        return Latent(torch.stack(deters, 1), torch.stack(stochs, 1)), torch.stack(actions, 1)
