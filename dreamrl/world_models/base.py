"""What every world model shares with the agent and the diagnostics: the training batch."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Batch(NamedTuple):
    """A training batch of replayed sequences, every tensor ``[B, T, ...]``."""

    obs: dict[str, torch.Tensor]  # images uint8, vectors float32
    action: torch.Tensor  # float [B, T, A]: one-hot or vector, taken after seeing obs t
    reward: torch.Tensor  # float [B, T]: reward received on arriving at obs t
    is_first: torch.Tensor  # bool [B, T]
    is_last: torch.Tensor  # bool [B, T]
    is_terminal: torch.Tensor  # bool [B, T]
