"""`compute.codec_chunk`: the encoder and decoder in chunks with recomputed activations give
the same losses and gradients as the whole batch at once, and keep far less for backward."""

from __future__ import annotations

import warnings

import pytest
import torch

from dreamrl.agent import Agent
from dreamrl.config import ConfigError, build_config
from dreamrl.nets.layers import ChannelNormSiLU
from dreamrl.spaces import Space
from dreamrl.world_models.rssm import in_chunks

from fixtures.autograd import saved_for_backward, storage_bytes

# 32x32 images: at 16x16 the CNN's last maps are 1x1 and one map's height equals its
# channels, and torch.compile gives the compiled norms two more graphs for those shapes.
OBS = {"image": Space("uint8", (32, 32, 3)), "vector": Space("float32", (5,))}
ACT = Space("int32", (), 3)


def make_agent(chunk: int) -> Agent:
    config = build_config(["debug"], {"task": "test", "compute.codec_chunk": chunk})
    return Agent(config, OBS, ACT)


def random_batch(batch: int = 3, length: int = 8) -> dict:
    B, T = batch, length
    gen = torch.Generator().manual_seed(5)
    data = {
        "image": torch.randint(0, 256, (B, T, *OBS["image"].shape), generator=gen, dtype=torch.uint8).numpy(),
        "vector": torch.randn(B, T, 5, generator=gen).numpy(),
        "action": torch.randint(0, 3, (B, T), generator=gen).numpy(),
        "reward": torch.randn(B, T, generator=gen).numpy(),
        "is_first": (torch.arange(T) == 0).expand(B, T).numpy(),
        "is_last": torch.zeros(B, T, dtype=torch.bool).numpy(),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool).numpy(),
    }
    return data


def world_model_losses_and_grads(agent: Agent, data: dict) -> tuple[dict, dict]:
    batch = agent.to_batch(data)
    gen = torch.Generator().manual_seed(11)
    losses, _, _ = agent.wm.loss(batch, gen)
    agent.wm.zero_grad(set_to_none=True)
    sum(v.mean() for v in losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in agent.wm.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


def test_in_chunks_matches_one_call_for_tensors_and_dicts():
    torch.manual_seed(0)
    weight = torch.randn(4, 2, requires_grad=True)
    x = torch.randn(10, 4, requires_grad=True)

    def fn(t: torch.Tensor, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"a": torch.tanh(t @ weight), "b": (t * d["s"]).sum(-1)}

    extra = {"s": torch.randn(10, 4)}
    whole = fn(x, extra)
    chunked = in_chunks(fn, 3, x, extra)  # 10 rows: chunks of 3, 3, 3 and 1
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key])
    grads = []
    for out in (whole, chunked):
        weight.grad = x.grad = None
        (out["a"].square().sum() + out["b"].sum()).backward()
        grads.append((weight.grad.clone(), x.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_in_chunks_without_gradients_is_one_call():
    calls = []

    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(len(t))
        return t * 2

    with torch.no_grad():
        out = in_chunks(fn, 2, torch.ones(5))
    assert calls == [5]
    assert out.tolist() == [2.0] * 5


def test_chunked_world_model_gives_the_same_losses_and_gradients():
    whole, chunked = make_agent(0), make_agent(5)  # 24 frames: 5 chunks, the last of 4
    chunked.wm.load_state_dict(whole.wm.state_dict())
    data = random_batch()
    losses_a, grads_a = world_model_losses_and_grads(whole, data)
    losses_b, grads_b = world_model_losses_and_grads(chunked, data)
    assert losses_a.keys() == losses_b.keys() >= {"image", "vector", "dyn", "rew"}
    for key in losses_a:
        torch.testing.assert_close(losses_b[key], losses_a[key], rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    assert any(n.startswith("encoder.convs") for n in grads_a)  # the CNNs did get gradients
    assert any(n.startswith("decoder.convs") for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_chunks_work_with_the_compiled_norms():
    """Recomputing a chunk runs the torch.compile'd norms again inside the backward pass.

    The RSSM's steps run eager here: compiled, they add two graphs with backward passes
    (over a minute of C++ builds on a cold cache), and test_compiled.py checks them
    against eager already."""
    config = build_config(["debug"], {"task": "test", "compute.codec_chunk": 7, "compute.compile": True})
    agent = Agent(config, OBS, ACT)
    assert all(m.fused for m in agent.wm.modules() if isinstance(m, ChannelNormSiLU))
    agent.wm.rssm.fused = False
    reference = make_agent(0)
    reference.wm.load_state_dict(agent.wm.state_dict())
    data = random_batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, grads = world_model_losses_and_grads(agent, data)
    assert not [w for w in caught if "compute.compile" in str(w.message)]  # no fallback to eager
    ref_losses, ref_grads = world_model_losses_and_grads(reference, data)
    torch.testing.assert_close(losses["image"], ref_losses["image"], rtol=1e-5, atol=1e-4)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def saved_bytes_for_backward(agent: Agent, data: dict) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of the world-model loss."""
    batch = agent.to_batch(data)
    with saved_for_backward() as saved:
        agent.wm.loss(batch)
    return storage_bytes(saved)


def test_chunks_keep_much_less_for_the_backward_pass():
    """The CNN activations dominate what a pixel step keeps; chunking keeps none of them."""
    data = random_batch(4, 16)
    whole = saved_bytes_for_backward(make_agent(0), data)
    chunked = saved_bytes_for_backward(make_agent(8), data)
    assert chunked < 0.5 * whole, (chunked, whole)


def test_a_negative_chunk_is_refused():
    with pytest.raises(ConfigError, match=r"compute\.codec_chunk"):
        build_config(["debug"], {"task": "test", "compute.codec_chunk": -1})
