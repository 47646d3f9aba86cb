"""The distributions of DreamerV3 as pure functions of tensors.

Plain functions rather than ``torch.distributions`` objects: they are what the losses
need, nothing more, with no argument validation on the hot path.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

# ----------------------------------------------------------------------------- squash


def symlog(x: torch.Tensor) -> torch.Tensor:
    """``sign(x) * log(1 + |x|)`` (paper eq. 9), elementwise."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`symlog`: ``sign(x) * (exp(|x|) - 1)``, elementwise."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


# ----------------------------------------------------------------------------- two-hot


def twohot_bins(count: int = 255, low: float = -20.0, high: float = 20.0) -> torch.Tensor:
    """Bin positions ``[count]``: ``symexp`` of an even grid over ``[low, high]``.

    Built from one half and mirrored, so the grid is exactly symmetric around 0 and a
    uniform distribution over it predicts exactly 0 (needed for zero-initialised heads).
    """
    if low != -high:
        raise ValueError("two-hot bins must be symmetric around zero")
    if count % 2 == 1:
        half = symexp(torch.linspace(low, 0.0, (count - 1) // 2 + 1, dtype=torch.float64))
        bins = torch.cat([half, -half[:-1].flip(0)])
    else:
        half = symexp(torch.linspace(low, 0.0, count // 2, dtype=torch.float64))
        bins = torch.cat([half, -half.flip(0)])
    return bins.float()


def twohot_encode(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Two-hot targets ``[..., K]`` for values ``x [...]`` on sorted ``bins [K]``.

    The weight is split between the two neighbouring bins in proportion to closeness
    (linear in the raw value, between symexp-spaced bins); values outside the range put
    all weight on the edge bin.
    """
    x = x.float()
    k = bins.shape[0]
    below = (bins <= x[..., None]).sum(-1) - 1
    above = k - (bins > x[..., None]).sum(-1)
    below = below.clamp(0, k - 1)
    above = above.clamp(0, k - 1)
    equal = below == above
    to_below = torch.where(equal, 1.0, (bins[below] - x).abs())
    to_above = torch.where(equal, 1.0, (bins[above] - x).abs())
    total = to_below + to_above
    weight_below = to_above / total
    weight_above = to_below / total
    return F.one_hot(below, k) * weight_below[..., None] + F.one_hot(above, k) * weight_above[..., None]


def twohot_mean(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Expected value ``[...]`` of the categorical ``logits [..., K]`` over ``bins``.

    Sums the two halves from the centre outwards so symmetric probabilities give
    exactly zero rather than float round-off.
    """
    probs = torch.softmax(logits.float(), -1)
    k = bins.shape[0]
    m = k // 2
    if k % 2 == 1:
        centre = probs[..., m] * bins[m]
        left = (probs[..., :m] * bins[:m]).flip(-1)
        right = probs[..., m + 1 :] * bins[m + 1 :]
        return centre + (left + right).sum(-1)
    left = (probs[..., :m] * bins[:m]).flip(-1)
    right = probs[..., m:] * bins[m:]
    return (left + right).sum(-1)


class _TwoHotCrossEntropy(torch.autograd.Function):
    """:func:`twohot_loss` with a backward pass that keeps only the logits.

    Composed of torch ops, autograd keeps the log-probabilities and the two-hot targets,
    two more tensors of the logits' size per call; the critic's loss makes two calls on
    the logits of every imagined state (``[16384, 255]`` floats, 16.7 MB, at the default
    batch). The gradient ``softmax(logits) * sum(targets) - targets`` is recomputed from
    the logits and the ``[...]`` target values instead.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, target, bins)
        encoded = twohot_encode(target, bins)
        return -(encoded * torch.log_softmax(_at_least_float32(logits), -1)).sum(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, target, bins = ctx.saved_tensors
        encoded = twohot_encode(target, bins)
        probs = torch.softmax(_at_least_float32(logits), -1)
        grad_logits = grad[..., None] * (probs * encoded.sum(-1, keepdim=True) - encoded)
        return grad_logits.to(logits.dtype), None, None


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def twohot_loss(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``[...]`` of ``logits [..., K]`` against two-hot(``target [...]``),
    computed in float32; no gradient reaches ``target``."""
    out = _TwoHotCrossEntropy.apply(logits, target.detach(), bins)
    assert isinstance(out, torch.Tensor)
    return out


# ----------------------------------------------------------------------------- categorical


def unimix_logits(logits: torch.Tensor, unimix: float, dim: int = -1) -> torch.Tensor:
    """Log-probabilities of ``(1 - unimix) * softmax(logits) + unimix / K`` along ``dim``."""
    if not unimix:
        return torch.log_softmax(logits, dim)
    probs = torch.softmax(logits, dim)
    probs = (1 - unimix) * probs + unimix / logits.shape[dim]
    return torch.log(probs)


def onehot_argmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Float one-hot of the first maximum of ``x`` along ``dim`` (same shape as ``x``).

    Built from ``amax`` and a running count rather than ``argmax`` + scatter: on a CPU,
    ``argmax`` along a non-trailing axis is over 10x slower than this.
    """
    hot = (x == x.amax(dim, keepdim=True)).to(x.dtype)
    return hot * (hot.cumsum(dim) == 1)  # keep only the first of exact ties


def sample_onehot(
    logits: torch.Tensor, generator: torch.Generator | None = None, dim: int = -1
) -> torch.Tensor:
    """A one-hot sample along ``dim`` with straight-through gradients (Gumbel-max draw).

    Forward value is the one-hot sample; the gradient is that of ``softmax(logits)``.
    """
    uniform = torch.rand(logits.shape, device=logits.device, generator=generator)
    return gumbel_onehot(logits, uniform, dim)


def gumbel_onehot(logits: torch.Tensor, uniform: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """:func:`sample_onehot` given its uniform draws ``uniform`` (``logits``' shape): a pure
    function, which torch.compile can take whole (the draw itself stays outside)."""
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-20)))
    return straight_through(onehot_argmax(logits.detach() + gumbel, dim), logits, dim)


def mode_onehot(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The most likely class one-hot along ``dim``, with straight-through gradients."""
    return straight_through(onehot_argmax(logits.detach(), dim), logits, dim)


def straight_through(hard: torch.Tensor, logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The one-hot ``hard`` forward, ``softmax(logits)``'s gradient backward."""
    hard = hard.to(logits.dtype)
    if not logits.requires_grad:
        return hard
    probs = torch.softmax(logits, dim)
    return hard + probs - probs.detach()


def categorical_kl(lhs: torch.Tensor, rhs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``KL(lhs || rhs)`` of categoricals along ``dim``, summed over the other event axis.

    Inputs ``[..., S, C]`` (or ``[..., C, S]`` with ``dim=-2``) of logits; output ``[...]``.
    """
    lhs = torch.log_softmax(lhs, dim)
    rhs = torch.log_softmax(rhs, dim)
    return (lhs.exp() * (lhs - rhs)).sum((-2, -1))


def categorical_entropy(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy of the categorical ``logits`` along ``dim`` (that axis is reduced)."""
    logp = torch.log_softmax(logits, dim)
    return -(logp.exp() * logp).sum(dim)


def categorical_logp(logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Log-probability ``[...]`` of the one-hot event ``[..., K]``."""
    return (torch.log_softmax(logits, -1) * onehot).sum(-1)


# ----------------------------------------------------------------------------- continuous


def bounded_normal(
    mean: torch.Tensor, std: torch.Tensor, minstd: float, maxstd: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map raw head outputs to ``(tanh(mean), std in [minstd, maxstd])``."""
    std = (maxstd - minstd) * torch.sigmoid(std + 2.0) + minstd
    return torch.tanh(mean), std


def normal_logp(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Diagonal normal log-density ``[...]`` of ``x [..., D]``, summed over D."""
    z = (x - mean) / std
    return (-0.5 * z.square() - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)


def normal_entropy(std: torch.Tensor) -> torch.Tensor:
    """Diagonal normal entropy ``[...]`` for ``std [..., D]``, summed over D."""
    return (0.5 * torch.log(2 * math.pi * std.square()) + 0.5).sum(-1)


# ----------------------------------------------------------------------------- binary


def bernoulli_logp(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of a (possibly soft) ``target`` in [0, 1] under ``sigmoid(logit)``."""
    return target * F.logsigmoid(logit) + (1 - target) * F.logsigmoid(-logit)
