"""What torchrun's environment says of this process: how many ranks its job has and
which one it is. Plain environment reads with no torch import, so every command can ask
before it decides whether it needs torch at all (a user's mistake is then refused in a
fraction of a second)."""

from __future__ import annotations

import os
from collections.abc import Mapping


def launched_ranks(environ: Mapping[str, str] = os.environ) -> int:
    """The job's number of ranks as torchrun's environment says (``WORLD_SIZE``); 1 when
    this process was not started by torchrun."""
    return int(environ.get("WORLD_SIZE", "1"))


def rank_prefix(environ: Mapping[str, str] = os.environ) -> str:
    """``"rank R: "`` in a process of a job of several ranks, to start its messages with;
    ``""`` otherwise."""
    return f"rank {environ.get('RANK', '0')}: " if launched_ranks(environ) > 1 else ""
