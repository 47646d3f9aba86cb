"""R2-Dreamer's decoder-free representation objective, as pure functions.

R2-Dreamer (Redundancy-Reduced World Models without Decoders or Augmentation, ICLR 2026;
official code github.com/NM512/r2dreamer) drops DreamerV3's observation decoder and trains
the representation with a Barlow Twins loss instead. Its two "views" are not two
augmentations of one image but two descriptions of one time step:

* the posterior model state ``feat = [flat stoch, deter]`` of every step of the replayed
  batch, mapped to the encoder's width by :class:`Projector` (one bias-free linear layer);
* the encoder embedding of the same step, detached (a fixed target: without the detach
  the encoder could make the target itself easy to match).

Rows are the ``N = B * T`` steps of the batch, flattened into one sample. Each of the two
``[N, D]`` matrices is standardised per dimension over the ``N`` rows (mean, then the
Bessel-corrected standard deviation plus ``1e-8``), ``C = a_std^T b_std / N`` is their
``[D, D]`` cross-correlation, and the loss is

    sum_i (C_ii - 1)^2  +  off_diagonal_weight * sum_{i != j} C_ij^2

with no division by ``D``; the official defaults are ``off_diagonal_weight = 5e-4`` and a
coefficient of ``0.05`` on this term in the world-model loss. Because the deviation is
the ``N - 1`` one but ``C`` divides by ``N``, ``C_ii`` is at most ``(N - 1) / N``: the
smallest possible loss is ``D / N**2``, not 0, reached when ``a`` is an increasing affine
map of ``b`` with uncorrelated dimensions.

The statistics are computed in float32 whatever the inputs' dtype (the official code runs
them under float16 autocast); the returned losses are float32.
"""

from __future__ import annotations

import torch
from torch import nn

from dreamrl.nets.layers import Linear

EPS = 1e-8  # added to each dimension's standard deviation
DEFAULT_OFF_DIAGONAL_WEIGHT = 5e-4  # the official ``r2dreamer.lambd``
DEFAULT_LOSS_SCALE = 0.05  # the official ``loss_scales.barlow``


def _rows(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"{name}: expected [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: standardising over N needs N >= 2 rows, got {x.shape[0]}")
    return x.float()


def standardize(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``x [N, D] -> [N, D]`` in float32: each column minus its mean over the ``N`` rows,
    divided by its Bessel-corrected (``N - 1``) standard deviation plus ``eps``."""
    x = _rows(x, "standardize")
    return (x - x.mean(0)) / (x.std(0) + eps)


def cross_correlation(a: torch.Tensor, b: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """``a [N, Da], b [N, Db] -> C [Da, Db]`` in float32, ``C = std(a)^T std(b) / N`` with
    both standardised over their ``N`` rows by :func:`standardize`.

    ``C_ij`` is ``(N - 1) / N`` times the Pearson correlation of ``a[:, i]`` and ``b[:, j]``
    (up to ``eps``).
    """
    a, b = _rows(a, "cross_correlation: a"), _rows(b, "cross_correlation: b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"cross_correlation: {a.shape[0]} rows in a but {b.shape[0]} in b")
    n = a.shape[0]
    return standardize(a, eps).T @ standardize(b, eps) / n


def barlow_twins_terms(
    a: torch.Tensor, b: torch.Tensor, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a [N, D], b [N, D] -> (on_diagonal [], off_diagonal [])``, float32 scalars.

    With ``C = cross_correlation(a, b)``: ``on_diagonal = sum_i (C_ii - 1)^2`` (invariance)
    and ``off_diagonal = sum_{i != j} C_ij^2`` (redundancy), both unweighted sums.
    """
    if a.dim() == 2 and b.dim() == 2 and a.shape[1] != b.shape[1]:
        raise ValueError(f"barlow_twins_terms: widths differ, a has {a.shape[1]} and b {b.shape[1]}")
    c = cross_correlation(a, b, eps)
    diag = torch.diagonal(c)
    on_diagonal = (diag - 1.0).square().sum()
    off = ~torch.eye(c.shape[0], c.shape[1], dtype=torch.bool, device=c.device)
    off_diagonal = c[off].square().sum()
    return on_diagonal, off_diagonal


def barlow_twins_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    off_diagonal_weight: float = DEFAULT_OFF_DIAGONAL_WEIGHT,
    eps: float = EPS,
) -> torch.Tensor:
    """``a [N, D], b [N, D] -> []`` (float32): ``on_diagonal + off_diagonal_weight *
    off_diagonal`` of :func:`barlow_twins_terms`, one value for the whole batch.

    Gradients reach both ``a`` and ``b``; detach one side to make it a target.
    """
    on_diagonal, off_diagonal = barlow_twins_terms(a, b, eps)
    return on_diagonal + off_diagonal_weight * off_diagonal


class Projector(nn.Module):
    """R2-Dreamer's map from the model state to the embedding's width: ``[..., in_dim] ->
    [..., out_dim]``, one linear layer without bias, norm or activation, initialised like
    every DreamerV3 layer (truncated normal of variance ``1 / in_dim``)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def r2dreamer_loss(
    feat: torch.Tensor,
    embed: torch.Tensor,
    projector: nn.Module,
    off_diagonal_weight: float = DEFAULT_OFF_DIAGONAL_WEIGHT,
    eps: float = EPS,
) -> torch.Tensor:
    """The R2-Dreamer representation loss of a replayed batch, float32 scalar ``[]``.

    ``feat [B, T, F]``: posterior features (flat stochastic state and deterministic state)
    of every step, with gradients; ``embed [B, T, E]``: the encoder's embeddings of the same
    steps, detached here; ``projector``: ``F -> E`` (:class:`Projector`). The ``B * T`` steps
    are one sample of rows: :func:`barlow_twins_loss` of ``projector(feat)`` against
    ``embed``. Unscaled: the world-model loss adds it times :data:`DEFAULT_LOSS_SCALE`.
    """
    if feat.shape[:-1] != embed.shape[:-1]:
        raise ValueError(
            f"r2dreamer_loss: feat {tuple(feat.shape)} and embed {tuple(embed.shape)} "
            "differ in their leading dimensions"
        )
    projected = projector(feat.reshape(-1, feat.shape[-1]))  # [B*T, E]
    target = embed.reshape(-1, embed.shape[-1]).detach()  # [B*T, E]
    return barlow_twins_loss(projected, target, off_diagonal_weight, eps)
