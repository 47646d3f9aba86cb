"""Functions run through torch.compile (``compute.compile``), with eager as the fallback.

On a CPU, many of a train step's kernels are too small for their arithmetic to matter:
their fixed cost per call does. torch.compile fuses a pure function's element-wise work
into a few generated kernels, forward and backward. What it compiles here is only ever
a pure function whose eager version gives the same numbers, so a compiler that fails
(no C++ compiler for a CPU build, say) costs speed and nothing else.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")


class Compiled(Generic[P, R]):
    """``fn`` compiled by torch.compile at its first call, with symbolic sizes.

    Symbolic from the start: the same function runs on the training, acting and
    evaluation batch sizes (and a pixel CNN's layer widths), and fixed sizes would give
    each its own graph, hitting torch.compile's limit of 8 per function, past which new
    shapes run eager. Where compiling or running the compiled code raises, it warns once
    (naming ``what``) and runs ``fn`` eager from then on.
    """

    def __init__(self, fn: Callable[P, R], what: str):
        self.fn = fn
        self.what = what
        self._compiled: Callable[P, R] | None = None
        self.failed = False

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.failed:
            return self.fn(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as error:  # a failing compiler, not a failing model: eager gives the same numbers
            self.failed = True
            warnings.warn(
                f"compute.compile: torch.compile failed ({error!r}); running {self.what} eager", stacklevel=2
            )
            return self.fn(*args, **kwargs)
