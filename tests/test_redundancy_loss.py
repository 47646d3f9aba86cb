"""R2-Dreamer's Barlow Twins loss (dreamrl.world_models.redundancy) against hand
computations written out in the test, its minimum, its off-diagonal weight, the
projector, and where its gradients go."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamrl.world_models.redundancy import (
    DEFAULT_OFF_DIAGONAL_WEIGHT,
    EPS,
    Projector,
    barlow_twins_loss,
    barlow_twins_terms,
    cross_correlation,
    r2dreamer_loss,
)


def hand_terms(a: list[list[float]], b: list[list[float]]) -> tuple[float, float]:
    """(on-diagonal, off-diagonal) sums in plain python: each column minus its mean,
    over its N-1 standard deviation plus EPS; C = a^T b / N."""
    n, d = len(a), len(a[0])

    def standardised(x: list[list[float]]) -> list[list[float]]:
        cols = []
        for j in range(d):
            col = [row[j] for row in x]
            mean = sum(col) / n
            std = math.sqrt(sum((v - mean) ** 2 for v in col) / (n - 1))
            cols.append([(v - mean) / (std + EPS) for v in col])
        return cols  # [D][N]

    sa, sb = standardised(a), standardised(b)
    c = [[sum(sa[i][k] * sb[j][k] for k in range(n)) / n for j in range(d)] for i in range(d)]
    on = sum((c[i][i] - 1.0) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on, off


def t(x: list[list[float]] | np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32)


# N = 4, D = 2. Columns of a: u = (1, -1, 1, -1) and v = (1, 1, -1, -1), mean 0, N-1
# variance 4/3, uncorrelated. b = (u, u + v): Pearson(u, u) = 1, Pearson(v, u) = 0,
# Pearson(u, u + v) = Pearson(v, u + v) = 1/sqrt(2). C = (N-1)/N * Pearson = 3/4 * that.
A = [[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]]
B = [[1.0, 2.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, -2.0]]
C_HAND = [[0.75, 0.75 / math.sqrt(2)], [0.0, 0.75 / math.sqrt(2)]]
ON_HAND = (0.75 - 1.0) ** 2 + (0.75 / math.sqrt(2) - 1.0) ** 2
OFF_HAND = (0.75 / math.sqrt(2)) ** 2  # = 9/32; C[1][0] is 0


def test_cross_correlation_by_hand():
    c = cross_correlation(t(A), t(B))
    assert c.shape == (2, 2) and c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), np.array(C_HAND), atol=1e-6)


def test_terms_and_loss_by_hand():
    on, off = barlow_twins_terms(t(A), t(B))
    assert on.shape == () and off.shape == ()
    assert on.item() == pytest.approx(ON_HAND, abs=1e-6)
    assert off.item() == pytest.approx(OFF_HAND, abs=1e-6)
    assert hand_terms(A, B) == pytest.approx((ON_HAND, OFF_HAND), abs=1e-6)
    loss = barlow_twins_loss(t(A), t(B), off_diagonal_weight=0.5)
    assert loss.item() == pytest.approx(ON_HAND + 0.5 * OFF_HAND, abs=1e-6)


def test_loss_matches_plain_python_on_other_numbers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 3))
    b = 0.5 * a + rng.normal(size=(7, 3))
    on, off = hand_terms(a.tolist(), b.tolist())
    got = barlow_twins_loss(t(a), t(b), off_diagonal_weight=DEFAULT_OFF_DIAGONAL_WEIGHT)
    assert got.item() == pytest.approx(on + DEFAULT_OFF_DIAGONAL_WEIGHT * off, rel=1e-5)


def test_identical_uncorrelated_inputs_give_the_minimum():
    """C_ii is at most (N-1)/N (N-1 deviation, division by N): the least loss is D/N**2,
    reached by a == b with uncorrelated columns, and by an increasing affine map of it."""
    n, d = 4, 2
    expected = d * (1.0 / n) ** 2
    a = t(A)
    assert barlow_twins_loss(a, a).item() == pytest.approx(expected, abs=1e-6)
    assert barlow_twins_loss(3.0 * a + 7.0, a).item() == pytest.approx(expected, abs=1e-6)
    # Anything else is above it: a sign flip, a mismatch, correlated columns.
    assert barlow_twins_loss(-a, a).item() > expected + 1.0
    assert barlow_twins_loss(t(A), t(B)).item() > expected
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = t(rng.normal(size=(n, d))), t(rng.normal(size=(n, d)))
        assert barlow_twins_loss(x, y).item() >= expected - 1e-6


def test_off_diagonal_weight_scales_only_the_off_diagonal_term():
    a, b = t(A), t(B)
    on, _ = barlow_twins_terms(a, b)
    assert barlow_twins_loss(a, b, off_diagonal_weight=0.0).item() == pytest.approx(on.item(), abs=1e-7)
    low = barlow_twins_loss(a, b, off_diagonal_weight=0.1).item()
    high = barlow_twins_loss(a, b, off_diagonal_weight=2.1).item()
    assert high - low == pytest.approx(2.0 * OFF_HAND, abs=1e-6)
    # The default is R2-Dreamer's lambda.
    default = barlow_twins_loss(a, b).item()
    assert default == pytest.approx(ON_HAND + 5e-4 * OFF_HAND, abs=1e-6)


def test_low_precision_inputs_give_a_float32_loss():
    a, b = t(A), t(B)
    got = barlow_twins_loss(a.bfloat16(), b.bfloat16())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(barlow_twins_loss(a, b).item(), abs=1e-5)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="widths differ"):
        barlow_twins_loss(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="N >= 2"):
        barlow_twins_loss(torch.zeros(1, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="rows"):
        cross_correlation(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        cross_correlation(torch.randn(2, 4, 2), torch.randn(2, 4, 2))


def test_projector_shape_and_architecture():
    torch.manual_seed(0)
    proj = Projector(40, 24)
    assert proj(torch.randn(3, 5, 40)).shape == (3, 5, 24)
    assert proj(torch.randn(15, 40)).shape == (15, 24)
    params = dict(proj.named_parameters())
    assert list(params) == ["linear.weight"]  # one linear layer, no bias, no norm
    assert params["linear.weight"].shape == (24, 40)
    # Linear: zero in, zero out (no bias); initial weights of variance ~ 1 / in_dim.
    assert torch.equal(proj(torch.zeros(2, 40)), torch.zeros(2, 24))
    big = Projector(512, 512).linear.weight
    assert big.var().item() == pytest.approx(1 / 512, rel=0.05)


def test_gradients_reach_both_inputs_unless_detached():
    torch.manual_seed(0)
    a = torch.randn(16, 4, requires_grad=True)
    b = torch.randn(16, 4, requires_grad=True)
    barlow_twins_loss(a, b).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert b.grad is not None and b.grad.abs().sum() > 0

    a.grad = None
    b.grad = None
    barlow_twins_loss(a, b.detach()).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert b.grad is None


def test_r2dreamer_loss_projects_feat_and_detaches_embed():
    torch.manual_seed(0)
    B_, T_, F_, E_ = 3, 5, 12, 6
    feat = torch.randn(B_, T_, F_, requires_grad=True)
    embed = torch.randn(B_, T_, E_, requires_grad=True)
    proj = Projector(F_, E_)
    loss = r2dreamer_loss(feat, embed, proj)
    assert loss.shape == ()
    # The B*T steps are one sample of rows.
    flat = barlow_twins_loss(proj(feat.reshape(-1, F_)), embed.reshape(-1, E_))
    assert loss.item() == pytest.approx(flat.item(), rel=1e-6)
    loss.backward()
    assert feat.grad is not None and feat.grad.abs().sum() > 0
    assert proj.linear.weight.grad is not None and proj.linear.weight.grad.abs().sum() > 0
    assert embed.grad is None  # the embedding is a target
    with pytest.raises(ValueError, match="leading dimensions"):
        r2dreamer_loss(feat, embed[:, :4], proj)


def test_config_defaults_are_the_official_coefficients():
    from dreamrl.config import Config
    from dreamrl.world_models.redundancy import DEFAULT_LOSS_SCALE, DEFAULT_OFF_DIAGONAL_WEIGHT

    cfg = Config().agent.decoderfree
    assert cfg.scale == DEFAULT_LOSS_SCALE == 0.05
    assert cfg.offdiag == DEFAULT_OFF_DIAGONAL_WEIGHT == 5e-4
