"""Counting the floating-point operations of a piece of work with torch's own counter.

``dreamrl bench``, ``compare``'s costs and the model-free baselines all count FLOPs the
same way: run the work once under ``torch.utils.flop_counter.FlopCounterMode`` and read
its total (forward and, where the work calls backward, backward). The counter sees
matrix products and convolutions only, which is where nearly all of a step's compute is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


def counted(work: Callable[[], R]) -> tuple[R, int]:
    """``work()``'s result and the FLOPs torch's counter saw it do. Gradient mode is the
    caller's: wrap the call in ``torch.no_grad()`` to count an inference."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = work()
    return result, int(counter.get_total_flops())
