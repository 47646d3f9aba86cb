"""``compute.compile``'s machinery: the eager fallback of a failing compiler, and the RSSM's
compiled steps, which must give the eager steps' numbers, draws and gradients."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dreamrl.agent import Agent
from dreamrl.config import RSSMConfig, build_config
from dreamrl.nets import distributions as D
from dreamrl.nets.compiled import Compiled
from dreamrl.nets.rssm import CLASS_DIM, RSSM, Latent
from dreamrl.spaces import Space

from fixtures.autograd import saved_for_backward, storage_bytes

CFG = RSSMConfig(deter=32, hidden=16, stoch=4, classes=3, blocks=4)
EMBED, ACT = 10, 2


def test_a_failing_compiler_falls_back_to_eager_once(monkeypatch):
    calls = []

    def broken_compile(fn, **options):
        def run(*args):
            calls.append(1)
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    double = Compiled(lambda x: 2 * x, "the doubling")
    x = torch.arange(3.0)
    with pytest.warns(UserWarning, match="running the doubling eager"):
        y = double(x)
    torch.testing.assert_close(y, 2 * x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        torch.testing.assert_close(double(x), 2 * x)
    assert len(calls) == 1 and double.failed  # not retried


def test_the_step_draws_what_sample_draws():
    """The steps take their uniform draws as an input; drawn by ``RSSM.uniform`` from a
    generator they give the sample ``RSSM.sample`` gives from the same generator state, so
    a seed gives the same run with or without ``compute.compile``."""
    torch.manual_seed(0)
    rssm = RSSM(CFG, EMBED, ACT)
    logits = torch.log_softmax(torch.randn(5, CFG.classes, CFG.stoch), CLASS_DIM)
    drawn = rssm.sample(logits, torch.Generator().manual_seed(3))
    uniform = rssm.uniform(5, logits.device, torch.Generator().manual_seed(3))
    torch.testing.assert_close(D.gumbel_onehot(logits, uniform, CLASS_DIM), drawn)
    assert drawn.sum() == 5 * CFG.stoch  # one class per latent, so a real draw was compared


def _observe_and_imagine(rssm: RSSM, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    embed = torch.randn(batch, 6, EMBED, generator=gen)
    action = torch.randn(batch, 6, ACT, generator=gen).clamp(-1, 1)
    is_first = torch.zeros(batch, 6, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[0, 3] = True  # a reset inside the sequence
    out = rssm.observe(rssm.initial(batch, "cpu"), embed, action, is_first, gen)
    weights = torch.linspace(-1, 1, out.posterior.deter.numel()).view_as(out.posterior.deter)
    loss = (out.posterior.deter * weights).sum() + out.post_logits.exp().square().sum()
    grads = torch.autograd.grad(loss, [p for p in rssm.parameters() if p.requires_grad], allow_unused=True)
    with torch.no_grad():  # from detached starts, as training imagines
        imagined, _ = rssm.imagine(out.last.detach(), action[:, :4], 4, gen)
    return (
        out.posterior.deter.detach(),
        out.posterior.stoch.detach(),
        out.post_logits.detach(),
        imagined.deter,
        imagined.stoch,
        *(g for g in grads if g is not None),
    )


def test_compiled_steps_give_the_eager_numbers_and_gradients():
    """With ``fused`` the filter and prior steps run torch.compile'd: same states, samples
    and log-probs (from the same generator), and the same parameter gradients, at two
    batch sizes (the training and the acting/evaluation ones).

    The batch sizes equal none of CFG's sizes: torch.compile gives equal sizes one symbol,
    so a batch of 3 beside CFG's 3 classes was compiled as fixed at 3 and the second batch
    size paid graphs of its own (a minute and more of C++ builds on a cold cache). Batches
    of 5 and 7 share the graphs, whose batch size stays symbolic."""
    torch.manual_seed(0)
    rssm = RSSM(CFG, EMBED, ACT)
    for batch in (5, 7):
        eager = _observe_and_imagine(rssm, batch, seed=batch)
        rssm.fused = True
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            compiled = _observe_and_imagine(rssm, batch, seed=batch)
        assert not [w for w in caught if "compute.compile" in str(w.message)]  # no fallback to eager
        rssm.fused = False
        assert len(eager) == len(compiled) > 5  # gradients reached parameters
        for a, b in zip(eager, compiled):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert np.isclose(float(eager[1].sum()), batch * 6 * CFG.stoch)  # one-hot samples


@pytest.mark.parametrize("compile_", [True, False])
def test_run_compile_switches_the_rssm_steps(compile_):
    obs = {"vector": Space("float32", (4,))}
    act = Space("int32", (), 2)
    agent = Agent(build_config(["debug"], {"task": "test", "compute.compile": compile_}), obs, act)
    assert agent.wm.rssm.fused is compile_


def test_compiled_observe_keeps_no_weight_copy_per_step_in_bfloat16():
    """Under autocast a compiled step would cast the weights inside its graph at every call
    and keep each bfloat16 copy for the backward pass (eager autocast caches one). The
    compiled steps take them cast once per rollout: what the backward pass keeps stays
    about what eager keeps, not one set of weight copies per step more."""
    torch.manual_seed(0)
    cfg = RSSMConfig(deter=256, hidden=32, stoch=4, classes=3, blocks=4)
    rssm = RSSM(cfg, EMBED, ACT)
    weight_bytes = sum(p.numel() * 2 for p in rssm.parameters() if p.ndim >= 2)  # bfloat16
    batch, steps = 2, 12
    embed = torch.randn(batch, steps, EMBED)
    action = torch.randn(batch, steps, ACT).clamp(-1, 1)
    is_first = torch.zeros(batch, steps, dtype=torch.bool)
    kept = {}
    for fused in (False, True):
        rssm.fused = fused
        # A start that needs gradients, as every later step's state does: all 12 steps run
        # one compiled graph. (A zero start's first step compiles a graph of its own, which
        # costs a minute of C++ builds and could add one step's copies, inside the bound.)
        start = Latent(*(t.requires_grad_() for t in rssm.initial(batch, "cpu")))
        with torch.autocast("cpu", torch.bfloat16), saved_for_backward() as saved:
            out = rssm.observe(start, embed, action, is_first, torch.Generator())
        kept[fused] = storage_bytes(saved)
        out.posterior.deter.float().sum().backward()  # the kept tensors serve a real backward pass
    # Eager keeps about one set of weight copies in all; one per step would be 12 sets.
    assert kept[False] < 3 * weight_bytes
    assert kept[True] < kept[False] + 2 * weight_bytes, (kept, weight_bytes)


def test_imagining_from_slices_reuses_the_compiled_prior_step():
    """Training imagines from contiguous states under the actor's actions; diagnostics
    from slices of longer rollouts under given actions. Both run the one compiled graph
    (a graph per input layout would soon reach torch.compile's 8 per function)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    rssm = RSSM(CFG, EMBED, ACT)
    rssm.fused = True
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        start = rssm.initial(6, "cpu")
        rssm.imagine(start, lambda state: torch.tanh(state.deter[:, :ACT]), 3, torch.Generator())
        long, _ = rssm.imagine(start, torch.rand(6, 5, ACT), 5, torch.Generator())
        sliced = Latent(long.deter[:, 2], long.stoch[:, 2])  # rows far apart in memory
        rssm.imagine(sliced, torch.rand(6, 9, ACT)[:, ::3], 3, torch.Generator())
    assert counters["stats"]["unique_graphs"] - graphs == 1
