"""LaProp with adaptive gradient clipping and a linear warm-up, as DreamerV3 uses it.

Per parameter tensor, in this order (the official code's optax chain):

1. AGC: ``g <- g / max(1, |g| / (agc * max(1e-3, |w|)))`` (Frobenius norms);
2. RMS: ``nu <- b2 nu + (1 - b2) g^2``; ``u = g / (sqrt(nu / (1 - b2^t)) + eps)``;
3. momentum on the *normalised* update (what distinguishes LaProp from Adam):
   ``mu <- b1 mu + (1 - b1) u``; ``m = mu / (1 - b1^t)``;
4. ``w <- w - lr_t m`` with ``lr_t = lr * min(1, (t - 1) / warmup)``: the first update
   has a learning rate of zero, as optax's linear schedule gives.

AGC norms are per tensor. Where dreamrl stores as several tensors what the official
code holds as one (the GRU's first block layer), ``agc_groups`` names the tensors that
share one norm, so clipping acts on the same quantity.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch


class LaProp(torch.optim.Optimizer):
    """LaProp (Ziyin et al., 2020) with AGC (Brock et al., 2021) and warm-up."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 4e-5,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-20,
        agc: float = 0.3,
        agc_floor: float = 1e-3,
        warmup: int = 1000,
        agc_groups: Sequence[Sequence[torch.Tensor]] = (),
    ):
        defaults = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, agc=agc, agc_floor=agc_floor, warmup=warmup)
        super().__init__(params, defaults)
        self.agc_groups = [list(g) for g in agc_groups]

    def _joint_norms(self, params: list[torch.Tensor], norms: list[torch.Tensor]) -> list[torch.Tensor]:
        """Replace each grouped tensor's norm by its group's joint norm."""
        if not self.agc_groups:
            return norms
        position = {id(p): i for i, p in enumerate(params)}
        norms = list(norms)
        for group in self.agc_groups:
            members = [position[id(p)] for p in group if id(p) in position]
            joint = torch.linalg.vector_norm(torch.stack([norms[i] for i in members]))
            for i in members:
                norms[i] = joint
        return norms

    def learning_rate(self, group: dict[str, Any], step: int) -> float:
        """Learning rate of update number ``step`` (1-based)."""
        if group["warmup"] <= 0:
            return group["lr"]
        return group["lr"] * min(1.0, (step - 1) / group["warmup"])

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.long)
                    state["nu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["mu"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["agc"]:
                gnorm = self._joint_norms(params, list(torch._foreach_norm(grads)))
                pnorm = self._joint_norms(params, list(torch._foreach_norm(params)))
                upper = torch._foreach_mul(torch._foreach_clamp_min(pnorm, group["agc_floor"]), group["agc"])
                ratio = torch._foreach_div(gnorm, upper)
                torch._foreach_clamp_min_(ratio, 1.0)
                grads = list(torch._foreach_div(grads, ratio))
            step = int(self.state[params[0]]["step"]) + 1
            for p in params:
                self.state[p]["step"].fill_(step)
            nus = [self.state[p]["nu"] for p in params]
            mus = [self.state[p]["mu"] for p in params]
            b1, b2 = group["beta1"], group["beta2"]
            torch._foreach_mul_(nus, b2)
            torch._foreach_addcmul_(nus, grads, grads, 1 - b2)
            denom = torch._foreach_div(nus, 1 - b2**step)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, group["eps"])
            updates = torch._foreach_div(grads, denom)
            torch._foreach_lerp_(mus, updates, 1 - b1)
            lr = self.learning_rate(group, step)
            if lr:
                torch._foreach_add_(params, mus, alpha=-lr / (1 - b1**step))
