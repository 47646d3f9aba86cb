"""Prediction heads on model features: reward, continue, critic and actor.

Every head is an MLP of NormAct units followed by one output layer whose init scale is
the config's ``outscale``.
"""

from __future__ import annotations

import torch
from torch import nn

from dreamrl.config import ConHeadConfig, PolicyConfig, RewHeadConfig, ValueConfig
from dreamrl.nets import distributions as D
from dreamrl.nets.layers import Linear, mlp, mlp_width
from dreamrl.spaces import Space, action_width


class TwoHotHead(nn.Module):
    """``features [..., F] -> logits [..., bins]`` of a symexp two-hot distribution.

    Used for rewards and values: :meth:`mean` decodes a prediction, :meth:`loss` is the
    cross-entropy against two-hot targets.
    """

    bins: torch.Tensor

    def __init__(self, inputs: int, cfg: RewHeadConfig | ValueConfig):
        super().__init__()
        self.mlp = mlp(inputs, cfg.layers, cfg.units)
        self.out = Linear(mlp_width(inputs, cfg.layers, cfg.units), cfg.bins, outscale=cfg.outscale)
        self.register_buffer("bins", D.twohot_bins(cfg.bins), persistent=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(feat)).float()

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return D.twohot_mean(logits, self.bins)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return D.twohot_loss(logits, target, self.bins)


class BinaryHead(nn.Module):
    """``features [..., F] -> logit [...]`` of a Bernoulli (the continue flag)."""

    def __init__(self, inputs: int, cfg: ConHeadConfig):
        super().__init__()
        self.mlp = mlp(inputs, cfg.layers, cfg.units)
        self.out = Linear(mlp_width(inputs, cfg.layers, cfg.units), 1, outscale=cfg.outscale)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.out(self.mlp(feat)).float().squeeze(-1)


class ActionDist:
    """A policy's distribution over model-format actions (one-hot or vector)."""

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def mode(self) -> torch.Tensor:
        raise NotImplementedError

    def logp(self, action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError


class OneHotDist(ActionDist):
    """Categorical over ``K`` actions, events as one-hot ``[..., K]``."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits  # already normalised log-probs (unimix applied)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return D.sample_onehot(self.logits, generator).detach()

    def mode(self) -> torch.Tensor:
        return D.onehot_argmax(self.logits.detach())

    def logp(self, action: torch.Tensor) -> torch.Tensor:
        return D.categorical_logp(self.logits, action)

    def entropy(self) -> torch.Tensor:
        return D.categorical_entropy(self.logits)


class BoundedNormalDist(ActionDist):
    """Diagonal normal with mean in [-1, 1] and std in [minstd, maxstd], ``[..., D]``."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean_ = mean
        self.std = std

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(self.mean_.shape, device=self.mean_.device, generator=generator)
        return (self.mean_ + self.std * noise).detach()

    def mode(self) -> torch.Tensor:
        return self.mean_

    def logp(self, action: torch.Tensor) -> torch.Tensor:
        return D.normal_logp(action, self.mean_, self.std)

    def entropy(self) -> torch.Tensor:
        return D.normal_entropy(self.std)


class PolicyHead(nn.Module):
    """``features [..., F] -> ActionDist``: categorical for discrete action spaces,
    bounded normal for continuous ones (separate mean and std output layers)."""

    def __init__(self, inputs: int, action: Space, cfg: PolicyConfig):
        super().__init__()
        self.discrete = action.discrete
        self.cfg = cfg
        width = action_width(action)
        self.mlp = mlp(inputs, cfg.layers, cfg.units)
        hidden = mlp_width(inputs, cfg.layers, cfg.units)
        self.out = Linear(hidden, width, outscale=cfg.outscale)
        if not self.discrete:
            self.std_out = Linear(hidden, width, outscale=cfg.outscale)

    def forward(self, feat: torch.Tensor) -> ActionDist:
        x = self.mlp(feat)
        if self.discrete:
            return OneHotDist(D.unimix_logits(self.out(x).float(), self.cfg.unimix))
        mean, std = D.bounded_normal(
            self.out(x).float(), self.std_out(x).float(), self.cfg.minstd, self.cfg.maxstd
        )
        return BoundedNormalDist(mean, std)
