"""The world model: encoder, RSSM, decoder, reward and continue heads, and their losses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn
from torch.profiler import record_function

from dreamrl.config import AgentConfig
from dreamrl.envs.spaces import Space, action_width
from dreamrl.nets import distributions as D
from dreamrl.nets.codec import Decoder, Encoder
from dreamrl.nets.heads import BinaryHead, TwoHotHead
from dreamrl.rssm import CLASS_DIM, RSSM, Latent, Observed, kl_losses


class Batch(NamedTuple):
    """A training batch of replayed sequences, every tensor ``[B, T, ...]``."""

    obs: dict[str, torch.Tensor]  # images uint8, vectors float32
    action: torch.Tensor  # float [B, T, A]: one-hot or vector, taken after seeing obs t
    reward: torch.Tensor  # float [B, T]: reward received on arriving at obs t
    is_first: torch.Tensor  # bool [B, T]
    is_last: torch.Tensor  # bool [B, T]
    is_terminal: torch.Tensor  # bool [B, T]


def previous_actions(action: torch.Tensor) -> torch.Tensor:
    """``[B, T, A]`` actions taken *before* each step: shifted right, zeros first."""
    return torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)


def continue_target(is_terminal: torch.Tensor, horizon: int, contdisc: bool) -> torch.Tensor:
    """``1 - terminal``, times the discount ``1 - 1/horizon`` when it is folded in."""
    target = 1.0 - is_terminal.float()
    return target * (1 - 1 / horizon) if contdisc else target


class WorldModel(nn.Module):
    """Everything learned from real experience: the model of the environment."""

    def __init__(self, obs_space: Mapping[str, Space], act_space: Space, cfg: AgentConfig):
        super().__init__()
        self.cfg = cfg
        self.obs_space = dict(obs_space)
        rssm_cfg = cfg.dyn.rssm
        self.encoder = Encoder(obs_space, cfg.enc.simple)
        self.rssm = RSSM(rssm_cfg, self.encoder.out_dim, action_width(act_space))
        feat = rssm_cfg.deter + rssm_cfg.stoch * rssm_cfg.classes
        self.feat_dim = feat
        self.decoder = Decoder(obs_space, cfg.dec.simple, rssm_cfg.deter, self.rssm.stoch_flat)
        self.reward = TwoHotHead(feat, cfg.rewhead)
        self.cont = BinaryHead(feat, cfg.conhead)

    def loss(
        self,
        batch: Batch,
        start: Latent,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], Observed, dict[str, torch.Tensor]]:
        """World-model losses ``{name: [B, T]}`` (unscaled), the filtered states, and
        metrics. Loss names: every observation key (reconstruction), ``rew``, ``con``,
        ``dyn``, ``rep``."""
        B, T = batch.is_first.shape
        # Named phases show up in `dreamrl bench --profile` (and cost nothing otherwise).
        with record_function("wm/encode"):
            embed = self.encoder(batch.obs)
        with record_function("wm/observe"):
            actions = previous_actions(batch.action)
            observed = self.rssm.observe(start, embed, actions, batch.is_first, generator)
        post = observed.posterior
        feat = post.features()  # [B, T, F]
        losses: dict[str, torch.Tensor] = {}
        dyn, rep = kl_losses(observed.post_logits, observed.prior_logits, self.cfg.dyn.rssm.free_nats)
        losses["dyn"], losses["rep"] = dyn, rep
        with record_function("wm/decode"):
            recon = self.decoder(post.deter.flatten(0, 1), post.stoch.flatten(0, 1).flatten(-2))
            flat_obs = {k: v.flatten(0, 1) for k, v in batch.obs.items()}
            for key, value in self.decoder.loss(recon, flat_obs).items():
                losses[key] = value.view(B, T)
        with record_function("wm/heads"):
            reward_feat = feat if self.cfg.reward_grad else feat.detach()
            losses["rew"] = self.reward.loss(self.reward(reward_feat), batch.reward)
            target = continue_target(batch.is_terminal, self.cfg.horizon, self.cfg.contdisc)
            losses["con"] = -D.bernoulli_logp(self.cont(feat), target)
        with torch.no_grad():
            metrics = {
                "wm/prior_ent": D.categorical_entropy(observed.prior_logits, CLASS_DIM).sum(-1).mean(),
                "wm/post_ent": D.categorical_entropy(observed.post_logits, CLASS_DIM).sum(-1).mean(),
                "wm/kl": D.categorical_kl(observed.post_logits, observed.prior_logits, CLASS_DIM).mean(),
            }
        return losses, observed, metrics
