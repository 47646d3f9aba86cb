"""Building blocks: initialised linear and conv layers, RMSNorm, MLPs, block-linear.

Initialisation follows the official code: a normal truncated at two standard deviations,
rescaled by 1.1368 so its variance is 1/fan_in, times an ``outscale`` (0 gives the
zero-initialised output layers of the reward and critic heads).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dreamrl.nets.compiled import Compiled

TRUNC_STD_CORRECTION = 1.1368  # std of N(0,1) truncated to [-2, 2] is 1/1.1368


def init_trunc_normal_(weight: torch.Tensor, fan_in: int, scale: float = 1.0) -> None:
    """In place: truncated normal with variance ``scale**2 / fan_in``."""
    with torch.no_grad():
        nn.init.trunc_normal_(weight, mean=0.0, std=1.0, a=-2.0, b=2.0)
        weight.mul_(TRUNC_STD_CORRECTION * scale / math.sqrt(fan_in))


class Linear(nn.Linear):
    """``nn.Linear`` with the DreamerV3 initialisation and zero bias."""

    def __init__(
        self,
        inputs: int,
        units: int,
        outscale: float = 1.0,
        bias: bool = True,
        fan_in: int | None = None,
    ):
        super().__init__(inputs, units, bias=bias)
        init_trunc_normal_(self.weight, fan_in or inputs, outscale)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class RMSNorm(nn.Module):
    """RMS normalisation over the last dimension with a learned scale (eps 1e-4)."""

    def __init__(self, size: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 whatever the compute dtype (dreamrl.precision).
        return F.rms_norm(x.float(), (x.shape[-1],), self.scale, self.eps).to(x.dtype)


def channel_rms_norm_silu(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``SiLU(RMSNorm over channels)`` of maps ``x [N, C, H, W]`` with ``scale [C]``,
    computed in float32 and returned in ``x``'s dtype."""
    x32 = x.float()
    inv = torch.rsqrt(x32.square().mean(1, keepdim=True) + eps)
    return F.silu(x32 * inv * scale[:, None, None]).to(x.dtype)


# Compiled at its first call into one kernel forward and one backward, instead of some
# ten passes over the maps each way (``compute.compile``; see dreamrl.nets.compiled).
fused_channel_rms_norm_silu = Compiled(channel_rms_norm_silu, "the CNN's norms")


class ChannelNormSiLU(nn.Module):
    """RMS normalisation over the channels of ``[N, C, H, W]`` maps, then SiLU.

    Around the convolutions these maps are the largest tensors of a step, and the norm's
    element-wise passes over them cost as much as a convolution on a CPU: ``fused``
    (``compute.compile``) runs :func:`fused_channel_rms_norm_silu` instead.
    """

    def __init__(self, channels: int, eps: float = 1e-4, fused: bool = False):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(channels))
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            # A view, not the Parameter itself: torch.compile holds a Parameter's shape
            # fixed, which would fix the channel count of the kernel and give each layer
            # width its own graphs (see fused_channel_rms_norm_silu).
            return fused_channel_rms_norm_silu(x, self.scale.view(-1), self.eps)
        return channel_rms_norm_silu(x, self.scale, self.eps)


class _RMSNormSiLU(torch.autograd.Function):
    """``SiLU(RMSNorm(x))`` over the last dimension that keeps only its input for backward.

    Composed of torch ops, autograd keeps the float32 copy of the input, the normalised
    values and the pre-activation: some 3.7 tensors of the layer's size per layer in
    float32, 5.6 in bfloat16 (measured on a 3-layer MLP). Here the backward pass
    recomputes them from the input and the per-row inverse RMS, which is element-wise
    work over a tensor that is already there; the imagined states' actor and critic MLPs
    (16,384 rows at the default batch) are where that memory was.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
        out, inv = _rms_norm_silu_forward(x, scale, eps)
        ctx.save_for_backward(x, inv, scale)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, inv, scale = ctx.saved_tensors
        normed = x.to(inv.dtype) * inv  # [..., D]
        y = normed * scale
        sig = torch.sigmoid(y)
        grad_y = grad.to(inv.dtype) * sig * (1 + y * (1 - sig))  # d SiLU(y) / dy = s (1 + y (1 - s))
        grad_scale = (grad_y * normed).reshape(-1, y.shape[-1]).sum(0)
        grad_normed = grad_y * scale
        # The RMS norm's Jacobian: inv * (g - n * mean(g * n)) for n = x * inv.
        grad_x = inv * (grad_normed - normed * (grad_normed * normed).mean(-1, keepdim=True))
        return grad_x.to(x.dtype), grad_scale.to(scale.dtype), None


def _rms_norm_silu_forward(
    x: torch.Tensor, scale: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rms_norm_silu` of ``x [..., D]``, and the per-row inverse RMS ``[..., 1]``."""
    x32 = x.to(torch.promote_types(x.dtype, torch.float32))
    inv = torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return F.silu(x32 * inv * scale).to(x.dtype), inv


def rms_norm_silu(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``SiLU(x / RMS(x) * scale)`` over the last dimension ``[..., D]`` with ``scale [D]``,
    computed in float32 (or ``x``'s wider dtype) and returned in ``x``'s dtype; its
    backward pass keeps only ``x`` and one value per row (see :class:`_RMSNormSiLU`)."""
    if torch.jit.is_tracing():
        # Traced (dreamrl export), an autograd.Function is a Python call that a TorchScript
        # file cannot hold: the same operations are traced instead (no backward is needed).
        return _rms_norm_silu_forward(x, scale, eps)[0]
    out = _RMSNormSiLU.apply(x, scale, eps)
    assert isinstance(out, torch.Tensor)
    return out


class NormAct(nn.Module):
    """Linear -> RMSNorm -> SiLU, the unit every MLP in DreamerV3 is made of."""

    def __init__(self, inputs: int, units: int):
        super().__init__()
        self.linear = Linear(inputs, units)
        self.norm = RMSNorm(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm_silu(self.linear(x), self.norm.scale, self.norm.eps)


def mlp(inputs: int, layers: int, units: int) -> nn.Sequential:
    """``layers`` NormAct units; with ``layers=0`` the identity."""
    mods = [NormAct(inputs if i == 0 else units, units) for i in range(layers)]
    return nn.Sequential(*mods)


def mlp_width(inputs: int, layers: int, units: int) -> int:
    """Output width of :func:`mlp`."""
    return units if layers else inputs


class BlockLinear(nn.Module):
    """Block-diagonal linear map: ``blocks`` independent linears on equal slices.

    ``x [..., inputs] -> [..., units]``; slice ``g`` of the input feeds slice ``g`` of
    the output. Fan-in for the init is the full ``inputs``, as in the official code.
    :meth:`blocks_forward` works in block-major layout ``[G, N, in/G] -> [G, N, out/G]``,
    which lets a chain of block layers run without transposing between them.
    """

    def __init__(
        self,
        inputs: int,
        units: int,
        blocks: int,
        outscale: float = 1.0,
        bias: bool = True,
        fan_in: int | None = None,
    ):
        super().__init__()
        if inputs % blocks or units % blocks:
            raise ValueError(f"BlockLinear: {inputs} -> {units} not divisible by {blocks} blocks")
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, inputs // blocks, units // blocks))
        self.bias = nn.Parameter(torch.zeros(units)) if bias else None
        init_trunc_normal_(self.weight, fan_in or inputs, outscale)

    def blocks_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[G, N, in/G] -> [G, N, out/G]``."""
        y = torch.bmm(x, self.weight)
        if self.bias is not None:
            y = y + self.bias.view(self.blocks, 1, -1)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        g = self.blocks
        x = x.reshape(-1, g, x.shape[-1] // g).transpose(0, 1)  # [G, N, in/G]
        y = torch.bmm(x, self.weight).transpose(0, 1)  # [N, G, out/G]
        y = y.reshape(*lead, -1)
        return y + self.bias if self.bias is not None else y


class BlockRMSNorm(nn.Module):
    """:class:`RMSNorm` over a vector held block-major as ``[G, N, size/G]``."""

    def __init__(self, size: int, blocks: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.blocks = blocks
        self.scale = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        inv = torch.rsqrt(x32.square().mean((0, 2), keepdim=True) + self.eps)
        return (x32 * inv * self.scale.view(self.blocks, 1, -1)).to(x.dtype)


class Conv2d(nn.Conv2d):
    """'Same'-padded conv with the DreamerV3 initialisation; weights channels-last."""

    def __init__(self, inputs: int, outputs: int, kernel: int, outscale: float = 1.0):
        super().__init__(inputs, outputs, kernel, padding=kernel // 2)
        init_trunc_normal_(self.weight, inputs * kernel * kernel, outscale)
        nn.init.zeros_(self.bias)  # type: ignore[arg-type]
        self.weight.data = self.weight.data.contiguous(memory_format=torch.channels_last)
