"""KL balancing with free nats, lambda-returns, return normalisation and LaProp, each
against a hand computation written out in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamrl.behaviors.actor_critic import ReturnNormalizer, lambda_return
from dreamrl.config import RetNormConfig
from dreamrl.nets.rssm import kl_losses
from dreamrl.optim import LaProp


def softmax_list(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def hand_kl_classes_major(post: list[list[float]], prior: list[list[float]]) -> float:
    """KL(post || prior) for logits laid out ``[C][S]``: softmax down each column (one
    latent), summed over the S columns."""
    classes, stoch = len(post), len(post[0])
    total = 0.0
    for s in range(stoch):
        p = softmax_list([post[c][s] for c in range(classes)])
        q = softmax_list([prior[c][s] for c in range(classes)])
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    return total


# 3 classes x 2 latents, classes on dim -2. Far apart: KL well above 1 nat.
POST_FAR = [[4.0, -2.0], [0.0, 3.0], [-3.0, 0.0]]
PRIOR_FAR = [[-2.0, 2.0], [1.0, -3.0], [2.0, 0.5]]
# Close together: KL far below 1 nat.
POST_NEAR = [[0.1, 0.0], [0.0, 0.2], [-0.1, 0.0]]
PRIOR_NEAR = [[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]]


def leaves(post: list[list[float]], prior: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(post, requires_grad=True), torch.tensor(prior, requires_grad=True)


# ----------------------------------------------------------------------------- kl_losses


def test_kl_losses_above_free_nats_equal_the_kl():
    expected = hand_kl_classes_major(POST_FAR, PRIOR_FAR)
    assert expected > 1.5  # the case really is above the threshold
    post, prior = leaves(POST_FAR, PRIOR_FAR)
    dyn, rep = kl_losses(post, prior, free_nats=1.0)
    assert dyn.shape == () and rep.shape == ()
    assert dyn.item() == pytest.approx(expected, rel=1e-5)
    assert rep.item() == pytest.approx(expected, rel=1e-5)


def test_kl_losses_below_free_nats_are_clipped_with_zero_gradient():
    assert hand_kl_classes_major(POST_NEAR, PRIOR_NEAR) < 0.1
    post, prior = leaves(POST_NEAR, PRIOR_NEAR)
    dyn, rep = kl_losses(post, prior, free_nats=1.0)
    assert dyn.item() == 1.0 and rep.item() == 1.0
    (dyn + rep).backward()
    for grad in (post.grad, prior.grad):
        assert grad is None or bool((grad == 0).all())


def test_kl_losses_without_free_nats_give_raw_kl():
    expected = hand_kl_classes_major(POST_NEAR, PRIOR_NEAR)
    post, prior = leaves(POST_NEAR, PRIOR_NEAR)
    dyn, rep = kl_losses(post, prior, free_nats=0.0)
    assert dyn.item() == pytest.approx(expected, rel=1e-4)
    assert rep.item() == pytest.approx(expected, rel=1e-4)


def test_kl_losses_batch_mixes_clipped_and_unclipped():
    post = torch.tensor([POST_FAR, POST_NEAR])  # [2, C, S]
    prior = torch.tensor([PRIOR_FAR, PRIOR_NEAR])
    dyn, rep = kl_losses(post, prior, free_nats=1.0)
    assert dyn.shape == (2,)
    assert dyn[0].item() == pytest.approx(hand_kl_classes_major(POST_FAR, PRIOR_FAR), rel=1e-5)
    assert dyn[1].item() == 1.0
    torch.testing.assert_close(dyn, rep)


def test_kl_dyn_gradient_reaches_only_the_prior():
    post, prior = leaves(POST_FAR, PRIOR_FAR)
    dyn, _ = kl_losses(post, prior, free_nats=1.0)
    dyn.backward()
    assert post.grad is None or bool((post.grad == 0).all())
    assert prior.grad is not None and prior.grad.abs().sum() > 0
    # d KL(p || q) / d prior_logits = q - p, per latent (column).
    p = torch.softmax(torch.tensor(POST_FAR), 0)
    q = torch.softmax(torch.tensor(PRIOR_FAR), 0)
    torch.testing.assert_close(prior.grad, q - p)


def test_kl_rep_gradient_reaches_only_the_posterior():
    post, prior = leaves(POST_FAR, PRIOR_FAR)
    _, rep = kl_losses(post, prior, free_nats=1.0)
    rep.backward()
    assert prior.grad is None or bool((prior.grad == 0).all())
    assert post.grad is not None and post.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- lambda_return

REW = [0.0, 1.0, 2.0, 3.0]
BOOT = [10.0, 20.0, 30.0, 40.0]
DISC, LAM = 0.9, 0.8


def returns(last: list[float], term: list[float], disc: float = DISC, lam: float = LAM) -> list[float]:
    out = lambda_return(
        torch.tensor([last]), torch.tensor([term]), torch.tensor([REW]), torch.tensor([BOOT]), disc, lam
    )
    assert out.shape == (1, 3)
    return out[0].tolist()


def test_lambda_return_hand_unrolled_with_terminal():
    """T=4, terminal at step 2: c = (1 - term) * disc, l = lam everywhere.

    R_2 = r_3 + c_3 ((1 - l) v_3 + l R_3), R_3 = v_3  -> 3 + 0.9 * 40           = 39
    R_1 = r_2 + c_2 (...), c_2 = 0                     -> 2
    R_0 = r_1 + c_1 ((1 - l) v_1 + l R_1)             -> 1 + 0.9 (0.2*20 + 0.8*2) = 6.04
    """
    got = returns(last=[0, 0, 0, 0], term=[0, 0, 1, 0])
    assert got == pytest.approx([6.04, 2.0, 39.0], rel=1e-6)


def test_lambda_return_last_flag_cuts_the_return():
    """``last`` at step 1: l_1 = 0, so R_0 bootstraps from v_1 only, ignoring R_1.

    R_2 = 39; R_1 = 2 + 0.9 (0.2*30 + 0.8*39) = 35.48; R_0 = 1 + 0.9 * 20 = 19.
    """
    got = returns(last=[0, 1, 0, 0], term=[0, 0, 0, 0])
    assert got == pytest.approx([19.0, 35.48, 39.0], rel=1e-6)


def test_lambda_return_extremes_of_lambda():
    # lam = 0: one-step TD targets r_{t+1} + disc * v_{t+1}.
    got = returns(last=[0, 0, 0, 0], term=[0, 0, 0, 0], lam=0.0)
    assert got == pytest.approx([1 + 0.9 * 20, 2 + 0.9 * 30, 3 + 0.9 * 40], rel=1e-6)
    # lam = 1: discounted rewards plus the discounted final bootstrap.
    got = returns(last=[0, 0, 0, 0], term=[0, 0, 0, 0], lam=1.0)
    r2 = 3 + 0.9 * 40
    r1 = 2 + 0.9 * r2
    r0 = 1 + 0.9 * r1
    assert got == pytest.approx([r0, r1, r2], rel=1e-6)


def test_lambda_return_rows_are_independent():
    last = torch.tensor([[0.0, 0, 0, 0], [0, 1, 0, 0]])
    term = torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 0]])
    rew = torch.tensor([REW, REW])
    boot = torch.tensor([BOOT, BOOT])
    out = lambda_return(last, term, rew, boot, DISC, LAM)
    torch.testing.assert_close(out, torch.tensor([[6.04, 2.0, 39.0], [19.0, 35.48, 39.0]]))


# ----------------------------------------------------------------------------- ReturnNormalizer


def test_return_normalizer_one_update_from_zero():
    gen = torch.Generator().manual_seed(0)
    rets = torch.randn(16, 15, generator=gen) * 3 + 1
    norm = ReturnNormalizer(RetNormConfig())  # rate 0.01, percentiles 5 and 95
    norm.update(rets)
    p5, p95 = np.percentile(rets.numpy().astype(np.float64), [5, 95])  # numpy's default: linear
    assert norm.lo.item() == pytest.approx(0.01 * p5, rel=1e-5)
    assert norm.hi.item() == pytest.approx(0.01 * p95, rel=1e-5)
    offset, scale = norm.stats()
    assert offset.item() == pytest.approx(0.01 * p5, rel=1e-5)
    assert scale.item() == max(1.0, norm.hi.item() - norm.lo.item()) == 1.0


def test_return_normalizer_spread_above_one():
    rets = torch.arange(1000, dtype=torch.float32) * 2.0  # P5 = 99.9, P95 = 1898.1
    norm = ReturnNormalizer(RetNormConfig())
    norm.update(rets)
    p5, p95 = np.percentile(np.arange(1000) * 2.0, [5, 95])
    assert (p5, p95) == pytest.approx((99.9, 1898.1))
    _, scale = norm.stats()
    assert scale.item() == pytest.approx(0.01 * (p95 - p5), rel=1e-5)
    assert scale.item() > 1.0
    # A second update moves the EMA on: lo = 0.99 * lo + 0.01 * P5 of the new batch.
    norm.update(rets + 100)
    assert norm.lo.item() == pytest.approx(0.99 * 0.01 * p5 + 0.01 * (p5 + 100), rel=1e-5)
    assert norm.hi.item() == pytest.approx(0.99 * 0.01 * p95 + 0.01 * (p95 + 100), rel=1e-5)


# ----------------------------------------------------------------------------- LaProp


def hand_laprop(
    w: np.ndarray,
    grads: list[np.ndarray],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    agc: float,
    warmup: int,
    clip: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reference LaProp in float64: returns the weights and nu after every step."""
    b1, b2 = beta1, beta2
    w = w.astype(np.float64).copy()
    nu = np.zeros_like(w)
    mu = np.zeros_like(w)
    weights, nus = [], []
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if clip:
            limit = agc * max(1e-3, np.linalg.norm(w))
            g = g / max(1.0, np.linalg.norm(g) / limit)
        nu = b2 * nu + (1 - b2) * g * g
        u = g / (np.sqrt(nu / (1 - b2**t)) + eps)
        mu = b1 * mu + (1 - b1) * u
        m = mu / (1 - b1**t)
        w = w - lr * min(1.0, (t - 1) / warmup) * m
        weights.append(w.copy())
        nus.append(nu.copy())
    return weights, nus


def run_laprop(
    w0: np.ndarray, grads: list[np.ndarray], **kwargs: float
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    param = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))
    opt = LaProp([param], **kwargs)
    weights, nus = [], []
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        weights.append(param.detach().numpy().astype(np.float64).copy())
        nus.append(opt.state[param]["nu"].numpy().astype(np.float64).copy())
    return weights, nus


W0 = np.array([[0.5, -1.0], [2.0, 0.25]])
GRADS = [
    np.array([[0.1, -0.2], [0.05, 0.3]]),
    np.array([[-0.3, 0.1], [0.2, 0.02]]),
    np.array([[0.05, 0.05], [-0.1, 0.2]]),
]
HYPER = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, agc=0.3, warmup=2)


def test_laprop_matches_hand_implementation_without_clipping():
    # |w| is about 2.3, so the AGC limit 0.3 * 2.3 is above every |g| here.
    assert all(np.linalg.norm(g) < 0.3 * 2.2 for g in GRADS)
    expected, expected_nu = hand_laprop(W0, GRADS, **HYPER)
    got, got_nu = run_laprop(W0, GRADS, **HYPER)
    # Warm-up: the first update has a learning rate of zero, so the weights stay put.
    assert np.array_equal(got[0], W0.astype(np.float32))
    for step in range(3):
        np.testing.assert_allclose(got[step], expected[step], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got_nu[step], expected_nu[step], rtol=1e-5, atol=1e-12)
    # Step 2 uses half the learning rate, step 3 the full one: both moved the weights.
    assert not np.allclose(got[1], got[0]) and not np.allclose(got[2], got[1])


def test_laprop_agc_clips_large_gradients():
    w0 = np.array([[0.1, 0.0], [0.0, 0.1]])  # |w| = 0.1414: limit 0.3 * 0.1414 = 0.0424
    grads = [
        np.array([[1.0, 2.0], [-2.0, 0.5]]),
        np.array([[0.01, 0.0], [0.0, 0.02]]),
        np.array([[3.0, -1.0], [0.0, 1.0]]),
    ]
    expected, expected_nu = hand_laprop(w0, grads, **HYPER)
    unclipped, _ = hand_laprop(w0, grads, **HYPER, clip=False)
    got, got_nu = run_laprop(w0, grads, **HYPER)
    # The clipped first gradient has norm exactly agc * |w|: nu = (1 - b2) * g_clipped^2.
    g1 = grads[0] * (0.3 * np.linalg.norm(w0)) / np.linalg.norm(grads[0])
    np.testing.assert_allclose(got_nu[0], 0.001 * g1 * g1, rtol=1e-5)
    for step in range(3):
        np.testing.assert_allclose(got[step], expected[step], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got_nu[step], expected_nu[step], rtol=1e-5, atol=1e-12)
    # Clipping changed the outcome: without it the weights would differ.
    assert not np.allclose(expected[2], unclipped[2], rtol=1e-3)


def test_laprop_agc_floor_for_zero_weights():
    """Zero weights clip against agc * 1e-3, not against zero."""
    w0 = np.zeros((2, 2))
    grads = [np.array([[1.0, 0.0], [0.0, 0.0]])]
    _, got_nu = run_laprop(w0, grads, **HYPER)
    # |g| clipped to 0.3 * 1e-3 = 3e-4, so nu = 0.001 * (3e-4)^2 = 9e-11.
    assert got_nu[0][0, 0] == pytest.approx(9e-11, rel=1e-5)
    assert got_nu[0][1, 1] == 0.0


def test_laprop_learning_rate_schedule():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = LaProp([param], lr=1.0, warmup=4)
    group = opt.param_groups[0]
    assert [opt.learning_rate(group, t) for t in (1, 2, 3, 5, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    opt_nowarm = LaProp([param], lr=0.5, warmup=0)
    assert opt_nowarm.learning_rate(opt_nowarm.param_groups[0], 1) == 0.5


def test_laprop_agc_group_clips_tensors_as_one():
    """Tensors in one AGC group are clipped by their joint norm: the same updates as a
    single tensor holding both (the official code's one GRU input kernel)."""
    torch.manual_seed(0)
    a0, b0 = torch.randn(3, 4), torch.randn(5)
    grads = [(s * torch.randn(3, 4), 0.01 * s * torch.randn(5)) for s in (40.0, 1.0, 30.0)]

    def run(grouped: bool) -> torch.Tensor:
        a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
        opt = LaProp([a, b], lr=0.1, warmup=0, agc_groups=[[a, b]] if grouped else [])
        for ga, gb in grads:
            a.grad, b.grad = ga.clone(), gb.clone()
            opt.step()
        return torch.cat([a.detach().flatten(), b.detach()])

    joint = torch.nn.Parameter(torch.cat([a0.flatten(), b0]))
    ref = LaProp([joint], lr=0.1, warmup=0)
    for ga, gb in grads:
        joint.grad = torch.cat([ga.flatten(), gb])
        ref.step()
    torch.testing.assert_close(run(grouped=True), joint.detach())
    # Clipped one by one, the two tensors move differently.
    assert not torch.allclose(run(grouped=False), joint.detach())
