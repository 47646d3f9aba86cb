"""The norm + SiLU units: the CNN's, eager and compiled (`compute.compile`; its fallback is
tested in test_compiled.py); the MLPs', whose backward pass keeps only the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from dreamrl.agent import Agent
from dreamrl.config import build_config
from dreamrl.nets.layers import (
    ChannelNormSiLU,
    NormAct,
    channel_rms_norm_silu,
    fused_channel_rms_norm_silu,
    rms_norm_silu,
)
from dreamrl.spaces import Space

from fixtures.autograd import saved_for_backward, storage_bytes


def test_channel_norm_silu_against_a_hand_computation():
    x = torch.tensor([[[[3.0]], [[4.0]]]])  # [1, 2, 1, 1]: channels 3 and 4, mean square 12.5
    scale = torch.tensor([1.0, 2.0])
    y = channel_rms_norm_silu(x, scale, eps=0.0)
    normed = np.array([3.0, 8.0]) / np.sqrt(12.5)
    expected = normed / (1 + np.exp(-normed))
    np.testing.assert_allclose(y.flatten().numpy(), expected, rtol=1e-6)


def test_compiled_matches_eager_values_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    scale = torch.rand(8) + 0.5
    outs = []
    for fn in (channel_rms_norm_silu, fused_channel_rms_norm_silu):
        xi, si = x.clone().requires_grad_(), scale.clone().requires_grad_()
        y = fn(xi, si, 1e-4)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append((y.detach(), xi.grad, si.grad))
    for eager, fused in zip(*outs):
        torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compile_", [True, False])
def test_run_compile_switches_every_cnn_norm_and_keeps_checkpoint_names(compile_):
    obs = {"image": Space("uint8", (64, 64, 3))}
    act = Space("int32", (), 2)
    agent = Agent(build_config(["debug"], {"task": "test", "compute.compile": compile_}), obs, act)
    norms = [m for m in agent.wm.modules() if isinstance(m, ChannelNormSiLU)]
    assert len(norms) == 8  # four encoder stages, the decoder's first map and its three stages
    assert all(m.fused is compile_ for m in norms)
    eager = Agent(build_config(["debug"], {"task": "test"}), obs, act)
    assert agent.wm.state_dict().keys() == eager.wm.state_dict().keys()


def test_every_layer_width_and_batch_size_shares_a_few_compiled_graphs(caplog):
    """torch.compile keeps at most 8 graphs per function, then warns and runs new shapes eager.
    The CNN's widths and resolutions times the training, acting and evaluation batch sizes
    are more shapes than that; the compiled norm must not specialise on them."""
    torch._dynamo.reset()  # count this test's graphs only: other tests compile other shapes
    torch.manual_seed(0)
    widths_and_sizes = [(8, 32), (12, 16), (16, 8), (16, 4), (24, 32), (32, 16)]
    with caplog.at_level("WARNING", logger="torch._dynamo"):
        for batch in (1, 3, 5, 64):
            for channels, size in widths_and_sizes:
                norm = ChannelNormSiLU(channels)
                norm.fused = True
                x = torch.randn(batch, channels, size, size).contiguous(memory_format=torch.channels_last)
                norm(x.requires_grad_()).sum().backward()
                with torch.no_grad():
                    torch.testing.assert_close(norm(x), channel_rms_norm_silu(x, norm.scale, norm.eps))
    assert not [r for r in caplog.records if "recompile_limit" in r.getMessage()]


# --------------------------------------------------------------------------- MLP norm + SiLU


def _reference_norm_silu(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """The same map composed of torch ops, as autograd would differentiate it."""
    x32 = x.float()
    return F.silu(F.rms_norm(x32, (x.shape[-1],), scale, eps)).to(x.dtype)


def test_mlp_norm_silu_gradients_pass_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(6, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: rms_norm_silu(a, b, 1e-4), (x, scale))


def test_mlp_norm_silu_matches_the_composed_ops():
    torch.manual_seed(0)
    x = torch.randn(5, 7, 32) * 3
    scale = torch.rand(32) + 0.5
    weights = torch.randn(5, 7, 32)
    outs = []
    for fn in (_reference_norm_silu, rms_norm_silu):
        xi, si = x.clone().requires_grad_(), scale.clone().requires_grad_()
        y = fn(xi, si, 1e-4)
        (y * weights).sum().backward()
        outs.append((y.detach(), xi.grad, si.grad))
    for ref, fused in zip(*outs):
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)


def test_mlp_norm_silu_in_bfloat16_computes_in_float32_and_returns_bfloat16():
    torch.manual_seed(0)
    x = (torch.randn(64, 48) * 2).to(torch.bfloat16).requires_grad_()
    scale = (torch.rand(48) + 0.5).requires_grad_()
    y = rms_norm_silu(x, scale, 1e-4)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16
    assert scale.grad is not None and scale.grad.dtype == torch.float32
    x32, s32 = x.detach().float().requires_grad_(), scale.detach().clone().requires_grad_()
    _reference_norm_silu(x32, s32, 1e-4).sum().backward()
    reference = _reference_norm_silu(x.detach().float(), scale.detach(), 1e-4)
    torch.testing.assert_close(y, reference.to(torch.bfloat16))  # float32 values, rounded once
    torch.testing.assert_close(scale.grad, s32.grad, rtol=1e-4, atol=1e-4)  # float32 sums either way


def _saved_bytes(fn) -> int:
    """Bytes of the storages autograd keeps for backward while ``fn`` runs."""
    with saved_for_backward() as saved:
        fn()
    return storage_bytes(saved)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_act_keeps_only_its_linear_input_and_output_for_backward(dtype):
    torch.manual_seed(0)
    unit = NormAct(64, 256)
    x = torch.randn(512, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        saved = _saved_bytes(lambda: unit(x))
    size = 512 * 256 * dtype.itemsize  # one [rows, units] tensor in the compute dtype
    # The linear's input (and its weight copy), then the pre-norm output and one float per row.
    budget = x.numel() * dtype.itemsize + unit.linear.weight.numel() * 4 + size + 512 * 4 + 256 * 4
    assert saved <= budget, (saved, budget)
