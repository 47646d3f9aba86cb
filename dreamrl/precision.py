"""Compute precision: float32 throughout, or bfloat16 matrix products under autocast.

With ``compute.precision=bfloat16`` the train step's and the policy's forward passes run
under ``torch.autocast``: matrix products and convolutions take bfloat16 inputs and give
bfloat16 outputs, as the official DreamerV3 code computes by default. Weights, gradients
and optimiser state stay float32. Everything whose precision matters stays float32 too,
as in the official code: each norm computes its statistics in float32 (and hands its
input's dtype on), and every head's logits, the RSSM's latent logits and GRU gates, the
decoder's outputs and all losses are float32 (``.float()`` at those boundaries, a no-op
in float32 runs).
"""

from __future__ import annotations

import contextlib

import torch

from dreamrl.config import PRECISIONS

# The dtype matrix products run in, per compute.precision (the keys are config.PRECISIONS).
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def bfloat16_is_native(device: torch.device) -> bool:
    """Whether ``device`` has bfloat16 arithmetic units; elsewhere bfloat16 is emulated
    and slower than float32. CPUs: AVX512-BF16 or AMX, as oneDNN sees them."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return True


def to_compute_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype autocast computes products in here, or ``x`` itself outside autocast.

    Autocast casts a product's input anew at every call and keeps each cast for the
    backward pass (only leaf weights are cached): a tensor that feeds several products
    (the features into actor and critic; a weight slice used at every step of a scan) is
    cheaper cast once by the caller.
    """
    return x.to(compute_dtype(x))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast computes products in on ``x``'s device, or ``x``'s own dtype
    outside autocast."""
    kind = x.device.type
    if not torch.is_autocast_enabled(kind):
        return x.dtype
    return torch.get_autocast_dtype(kind)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The context a forward pass runs in for ``precision`` (one of :data:`PRECISIONS`)."""
    if precision not in COMPUTE_DTYPES:
        raise ValueError(f"compute.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=COMPUTE_DTYPES[precision])
