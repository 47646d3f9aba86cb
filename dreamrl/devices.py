"""Which torch device a run computes on (``compute.device``)."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> cuda when available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
