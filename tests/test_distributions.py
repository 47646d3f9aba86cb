"""Golden-value tests for dreamrl.nets.distributions.

Every expected value is a literal or a simple formula written out here, never a second
call of the function under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from dreamrl.nets import distributions as D

from fixtures.autograd import saved_for_backward, storage_bytes


def softmax_list(logits: list[float]) -> list[float]:
    """Plain-Python softmax, the reference for the tensor code."""
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------- symlog


def test_symlog_golden_values():
    x = torch.tensor([0.0, 1.0, -1.0, 10.0, -1e3], dtype=torch.float64)
    expected = torch.tensor(
        [0.0, math.log(2.0), -math.log(2.0), math.log(11.0), -math.log(1001.0)], dtype=torch.float64
    )
    torch.testing.assert_close(D.symlog(x), expected, rtol=1e-12, atol=0)
    assert D.symlog(torch.tensor(0.0)).item() == 0.0


def test_symexp_golden_values():
    x = torch.tensor([0.0, 1.0, -1.0, 10.0, -1e3 / 100], dtype=torch.float64)
    expected = torch.tensor(
        [0.0, math.e - 1, -(math.e - 1), math.exp(10.0) - 1, -(math.exp(10.0) - 1)], dtype=torch.float64
    )
    torch.testing.assert_close(D.symexp(x), expected, rtol=1e-12, atol=0)
    # symexp(log 2) = 1 and symexp(-log 1001) = -1000: the inverse on the symlog values.
    torch.testing.assert_close(
        D.symexp(torch.tensor([math.log(2.0), -math.log(1001.0)], dtype=torch.float64)),
        torch.tensor([1.0, -1000.0], dtype=torch.float64),
    )


def test_symlog_symexp_invert_each_other():
    x = torch.tensor([0.0, 1.0, -1.0, 10.0, -1e3, 3.5e5, -2e-4], dtype=torch.float64)
    torch.testing.assert_close(D.symexp(D.symlog(x)), x, rtol=1e-12, atol=1e-15)
    y = torch.linspace(-15, 15, 31, dtype=torch.float64)
    torch.testing.assert_close(D.symlog(D.symexp(y)), y, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- two-hot bins


def test_twohot_bins_255():
    bins = D.twohot_bins(255)
    assert bins.shape == (255,) and bins.dtype == torch.float32
    assert bins[127].item() == 0.0
    edge = math.exp(20.0) - 1
    assert bins[0].item() == pytest.approx(-edge, rel=1e-7)
    assert bins[-1].item() == pytest.approx(edge, rel=1e-7)
    # Exactly symmetric: bins[i] == -bins[254 - i] bit for bit.
    assert torch.equal(bins, -bins.flip(0))
    assert bool((bins[1:] > bins[:-1]).all())
    # Grid points are symexp of an even grid over [-20, 20] in steps of 40/254.
    i = 200
    x = -20 + 40 * i / 254
    assert bins[i].item() == pytest.approx(math.copysign(math.expm1(abs(x)), x), rel=1e-6)


def test_twohot_bins_rejects_asymmetric_range():
    with pytest.raises(ValueError):
        D.twohot_bins(11, -10.0, 20.0)


# ----------------------------------------------------------------------------- two-hot encode

SMALL_BINS = torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0])


def encode(value: float) -> list[float]:
    return D.twohot_encode(torch.tensor(value), SMALL_BINS).tolist()


def test_twohot_encode_between_bins():
    assert encode(0.5) == pytest.approx([0, 0, 0.5, 0.5, 0])
    assert encode(5.5) == pytest.approx([0, 0, 0, 0.5, 0.5])
    assert encode(0.25) == pytest.approx([0, 0, 0.75, 0.25, 0])
    # -7.75 is 2.25 from -10 and 6.75 from -1: weights 6.75/9 and 2.25/9.
    assert encode(-7.75) == pytest.approx([0.75, 0.25, 0, 0, 0])


def test_twohot_encode_on_a_bin_puts_all_weight_there():
    for i, value in enumerate([-10.0, -1.0, 0.0, 1.0, 10.0]):
        expected = [0.0] * 5
        expected[i] = 1.0
        assert encode(value) == pytest.approx(expected, abs=1e-7), value


def test_twohot_encode_beyond_edges_uses_edge_bin():
    assert encode(-1e6) == pytest.approx([1, 0, 0, 0, 0])
    assert encode(-10.5) == pytest.approx([1, 0, 0, 0, 0])
    assert encode(11.0) == pytest.approx([0, 0, 0, 0, 1])
    assert encode(1e9) == pytest.approx([0, 0, 0, 0, 1])


def test_twohot_encode_weights_sum_to_one_and_preserve_value():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(200) * 20, torch.tensor([-10.0, 10.0, 0.0, -50.0, 50.0])])
    enc = D.twohot_encode(x, SMALL_BINS)
    assert enc.shape == (205, 5)
    torch.testing.assert_close(enc.sum(-1), torch.ones(205))
    assert bool((enc >= 0).all())
    assert bool(((enc > 0).sum(-1) <= 2).all())
    # Inside the range the weighted bin positions give back the value (linear split).
    inside = x.abs() <= 10
    torch.testing.assert_close((enc * SMALL_BINS).sum(-1)[inside], x[inside], rtol=0, atol=1e-5)


def test_twohot_encode_batch_shape():
    x = torch.tensor([[0.5, 5.5, 20.0], [-1.0, 0.0, -0.5]])
    enc = D.twohot_encode(x, SMALL_BINS)
    assert enc.shape == (2, 3, 5)
    assert enc[1, 2].tolist() == pytest.approx([0, 0.5, 0.5, 0, 0])


# ----------------------------------------------------------------------------- two-hot mean / loss


def test_twohot_mean_of_uniform_is_exactly_zero():
    bins = D.twohot_bins(255)
    assert D.twohot_mean(torch.zeros(255), bins).item() == 0.0
    assert torch.equal(D.twohot_mean(torch.zeros(3, 4, 255), bins), torch.zeros(3, 4))
    # Also for an even bin count.
    assert D.twohot_mean(torch.zeros(16), D.twohot_bins(16)).item() == 0.0


def test_twohot_mean_of_peaked_distribution_is_that_bin():
    bins = D.twohot_bins(255)
    for index in (0, 40, 127, 200, 254):
        logits = torch.zeros(255)
        logits[index] = 200.0  # every other bin gets e^-200 of the mass: nothing in float32
        assert D.twohot_mean(logits, bins).item() == pytest.approx(bins[index].item(), rel=1e-6, abs=1e-12)


def test_twohot_mean_matches_hand_expectation():
    logits = [0.3, -1.0, 2.0, 0.0, 0.5]
    p = softmax_list(logits)
    expected = sum(pi * b for pi, b in zip(p, [-10.0, -1.0, 0.0, 1.0, 10.0], strict=True))
    got = D.twohot_mean(torch.tensor(logits), SMALL_BINS).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_twohot_loss_is_hand_cross_entropy():
    logits = [0.3, -1.0, 2.0, 0.0, 0.5]
    logz = math.log(sum(math.exp(v) for v in logits))
    logp = [v - logz for v in logits]
    # Target 0.25: weight 0.75 on bin 0.0 (index 2), 0.25 on bin 1.0 (index 3).
    expected = -(0.75 * logp[2] + 0.25 * logp[3])
    got = D.twohot_loss(torch.tensor(logits), torch.tensor(0.25), SMALL_BINS).item()
    assert got == pytest.approx(expected, rel=1e-6)
    # Target beyond the range: plain cross-entropy on the edge bin.
    got = D.twohot_loss(torch.tensor(logits), torch.tensor(-99.0), SMALL_BINS).item()
    assert got == pytest.approx(-logp[0], rel=1e-6)


def test_twohot_loss_does_not_backprop_into_target():
    logits = torch.zeros(5, requires_grad=True)
    target = torch.tensor(0.5, requires_grad=True)
    D.twohot_loss(logits, target, SMALL_BINS).backward()
    assert target.grad is None
    # d CE / d logits = softmax - target weights = 0.2 - [0, 0, .5, .5, 0].
    torch.testing.assert_close(logits.grad, torch.tensor([0.2, 0.2, -0.3, -0.3, 0.2]))


def test_twohot_loss_gradient_passes_gradcheck():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[-99.0, -3.0, 0.0], [0.25, 1.0, 7.5], [-0.5, 10.0, 40.0], [2.0, -1.0, 0.1]])
    assert torch.autograd.gradcheck(lambda z: D.twohot_loss(z, target, SMALL_BINS), (logits,))


def test_twohot_loss_keeps_only_the_logits_for_backward():
    logits = torch.randn(64, 255, requires_grad=True)
    target = torch.randn(64) * 10
    with saved_for_backward() as saved:
        D.twohot_loss(logits, target, D.twohot_bins(255))
    # logits, targets and bins; the composed ops kept log-probabilities and two-hot targets too.
    assert storage_bytes(saved) == logits.nbytes + target.nbytes + 255 * 4


# ----------------------------------------------------------------------------- unimix


def test_unimix_logits_hand_three_classes():
    logits = [1.0, 2.0, 3.0]
    u = 0.01
    expected = [(1 - u) * p + u / 3 for p in softmax_list(logits)]
    got = D.unimix_logits(torch.tensor(logits), u).exp()
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-6, atol=0)
    assert got.sum().item() == pytest.approx(1.0, abs=1e-6)
    # Even a hopeless class keeps at least u / K.
    got = D.unimix_logits(torch.tensor([0.0, -1e4, 0.0]), u).exp()
    assert got[1].item() == pytest.approx(u / 3, rel=1e-5)


def test_unimix_logits_along_dim_minus_two():
    u = 0.2
    columns = [[1.0, 2.0, 3.0], [0.0, -2.0, 5.0]]
    x = torch.tensor(columns).T  # [3 classes, 2 variables]: classes along dim -2
    got = D.unimix_logits(x, u, dim=-2).exp()
    assert got.shape == (3, 2)
    for j, col in enumerate(columns):
        expected = [(1 - u) * p + u / 3 for p in softmax_list(col)]
        torch.testing.assert_close(got[:, j], torch.tensor(expected), rtol=1e-6, atol=0)


def test_unimix_zero_is_log_softmax():
    logits = [1.0, 2.0, 3.0]
    got = D.unimix_logits(torch.tensor(logits), 0.0).exp()
    torch.testing.assert_close(got, torch.tensor(softmax_list(logits)), rtol=1e-6, atol=0)


# ----------------------------------------------------------------------------- one-hot sampling


@pytest.mark.parametrize("dim", [-1, -2])
def test_sample_onehot_is_exactly_onehot(dim):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 7, generator=gen)
    sample = D.sample_onehot(logits, gen, dim)
    assert sample.shape == logits.shape
    assert bool(((sample == 0) | (sample == 1)).all())
    assert torch.equal(sample.sum(dim), torch.ones_like(sample.sum(dim)))
    # With gradients attached the forward value is hard + p - sg(p): one-hot up to the
    # float round-off of adding and subtracting p.
    sample = D.sample_onehot(logits.clone().requires_grad_(), gen, dim).detach()
    torch.testing.assert_close(sample, sample.round(), rtol=0, atol=1e-6)
    assert bool(((sample.round() == 0) | (sample.round() == 1)).all())
    torch.testing.assert_close(sample.round().sum(dim), torch.ones(sample.sum(dim).shape))


@pytest.mark.parametrize("dim", [-1, -2])
def test_sample_onehot_straight_through_gradient(dim):
    """d(sum(w * sample)) / d logits must equal d(sum(w * softmax(logits))) / d logits."""
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(4, 3, 5, generator=gen)
    w = torch.randn(4, 3, 5, generator=gen)
    logits = base.clone().requires_grad_()
    (w * D.sample_onehot(logits, gen, dim)).sum().backward()
    ref_logits = base.clone().requires_grad_()
    (w * torch.softmax(ref_logits, dim)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    torch.testing.assert_close(logits.grad, ref_logits.grad)


@pytest.mark.parametrize("dim", [-1, -2])
def test_sample_onehot_frequencies_match_probabilities(dim):
    probs = torch.tensor([0.2, 0.3, 0.5])
    n = 40_000
    logits = probs.log().expand(n, 3)
    if dim == -2:
        logits = logits.T.contiguous()
    gen = torch.Generator().manual_seed(1234)
    sample = D.sample_onehot(logits, gen, dim)
    freq = sample.mean(0) if dim == -1 else sample.mean(1)
    # Standard error is at most sqrt(0.25 / 40000) = 0.0025; allow about 4 of them.
    torch.testing.assert_close(freq, probs, rtol=0, atol=0.01)


def test_sample_onehot_seeded_generator_is_reproducible():
    logits = torch.randn(10, 8)
    a = D.sample_onehot(logits, torch.Generator().manual_seed(7))
    b = D.sample_onehot(logits, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_onehot_argmax_picks_first_of_ties():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0], [0.0, -1.0, 4.0, 4.0]])
    expected = torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    assert torch.equal(D.onehot_argmax(x), expected)
    assert torch.equal(D.onehot_argmax(x.T, dim=-2), expected.T)


def test_mode_onehot_is_argmax_with_softmax_gradient():
    logits = torch.tensor([0.5, 2.0, -1.0], requires_grad=True)
    mode = D.mode_onehot(logits)
    assert mode.tolist() == [0.0, 1.0, 0.0]
    mode[1].backward()
    p = softmax_list([0.5, 2.0, -1.0])
    # d softmax_1 / d logit_j = p_1 (delta_1j - p_j)
    expected = [-p[1] * p[0], p[1] * (1 - p[1]), -p[1] * p[2]]
    torch.testing.assert_close(logits.grad, torch.tensor(expected))


# ----------------------------------------------------------------------------- KL, entropy


def hand_kl(lhs: list[list[float]], rhs: list[list[float]]) -> float:
    """Sum over latents of KL(softmax(lhs_i) || softmax(rhs_i))."""
    total = 0.0
    for a, b in zip(lhs, rhs, strict=True):
        p, q = softmax_list(a), softmax_list(b)
        total += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    return total


def test_categorical_kl_two_latents_three_classes():
    lhs = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    rhs = [[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]
    expected = hand_kl(lhs, rhs)
    got = D.categorical_kl(torch.tensor(lhs), torch.tensor(rhs))
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Classes-major layout [C, S] along dim -2: the same numbers.
    got_t = D.categorical_kl(torch.tensor(lhs).T, torch.tensor(rhs).T, dim=-2)
    assert got_t.item() == pytest.approx(expected, rel=1e-5)
    # KL of a distribution with itself is zero; batch dims are kept.
    same = D.categorical_kl(torch.tensor([lhs, rhs]), torch.tensor([lhs, rhs]))
    assert same.shape == (2,)
    torch.testing.assert_close(same, torch.zeros(2), rtol=0, atol=1e-6)


def test_categorical_entropy_and_logp():
    logits = [1.0, 0.0, -1.0]
    p = softmax_list(logits)
    expected = -sum(pi * math.log(pi) for pi in p)
    assert D.categorical_entropy(torch.tensor(logits)).item() == pytest.approx(expected, rel=1e-6)
    assert D.categorical_entropy(torch.zeros(4)).item() == pytest.approx(math.log(4), rel=1e-6)
    onehot = torch.tensor([0.0, 0.0, 1.0])
    assert D.categorical_logp(torch.tensor(logits), onehot).item() == pytest.approx(math.log(p[2]), rel=1e-6)


# ----------------------------------------------------------------------------- continuous


def test_bounded_normal_ranges():
    minstd, maxstd = 0.1, 1.0
    raw = torch.tensor([-1e3, -3.0, 0.0, 3.0, 1e3])
    mean, std = D.bounded_normal(raw, raw, minstd, maxstd)
    assert bool((mean.abs() <= 1).all())
    assert bool((std >= minstd).all()) and bool((std <= maxstd).all())
    assert mean[2].item() == 0.0
    assert mean[3].item() == pytest.approx(math.tanh(3.0), rel=1e-6)
    assert std[0].item() == pytest.approx(minstd, rel=1e-6)
    assert std[-1].item() == pytest.approx(maxstd, rel=1e-6)
    # Raw 0 maps to (max - min) * sigmoid(2) + min.
    assert std[2].item() == pytest.approx((maxstd - minstd) * sigmoid(2.0) + minstd, rel=1e-6)


def test_normal_logp_matches_formula():
    x, mean, std = [0.3, -1.0], [0.0, 0.5], [1.0, 0.25]
    expected = sum(
        -0.5 * ((xi - mi) / si) ** 2 - math.log(si) - 0.5 * math.log(2 * math.pi)
        for xi, mi, si in zip(x, mean, std, strict=True)
    )
    got = D.normal_logp(torch.tensor(x), torch.tensor(mean), torch.tensor(std))
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_normal_entropy_matches_formula():
    std = [1.0, 0.25, 3.0]
    expected = sum(0.5 * math.log(2 * math.pi * math.e * s * s) for s in std)
    assert D.normal_entropy(torch.tensor(std)).item() == pytest.approx(expected, rel=1e-6)
    got = D.normal_entropy(torch.tensor([[1.0], [2.0]]))
    assert got.shape == (2,)
    assert got[1].item() - got[0].item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_bernoulli_logp_soft_target():
    logit, target = 0.3, 0.7
    expected = target * math.log(sigmoid(logit)) + (1 - target) * math.log(1 - sigmoid(logit))
    got = D.bernoulli_logp(torch.tensor(logit), torch.tensor(target))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Hard targets and a saturated logit stay finite.
    got = D.bernoulli_logp(torch.tensor([50.0, -50.0]), torch.tensor([1.0, 1.0]))
    assert got[0].item() == pytest.approx(0.0, abs=1e-12)
    assert got[1].item() == pytest.approx(-50.0, rel=1e-6)
