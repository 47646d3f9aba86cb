"""Progress shown during training: a tqdm bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


class Progress:
    """Env steps (or another ``unit``: offline training counts updates), their rate,
    latest episode return and latest eval return."""

    def __init__(
        self,
        total: int,
        initial: int,
        enabled: bool = True,
        out: TextIO | None = None,
        line_every: float = 30.0,
        unit: str = "env steps",
    ):
        self.out = out or sys.stdout  # as it is now, not as it was at import
        self.unit = unit
        self.enabled = enabled
        self.total = total
        self.line_every = line_every
        self._last_line = time.time()
        self._last_steps = initial
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                unit=unit.split()[-1].removesuffix("s"),
                unit_scale=True,
                dynamic_ncols=True,
                mininterval=0.5,
                smoothing=0.05,
            )

    def update(self, steps: int, last_return: float, eval_return: float) -> None:
        if not self.enabled:
            return
        post = {"return": _fmt(last_return), "eval": _fmt(eval_return)}
        if self._bar is not None:
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(steps - self._bar.n)
            return
        now = time.time()
        if now - self._last_line >= self.line_every:
            rate = (steps - self._last_steps) / (now - self._last_line)
            pct = 100 * steps / self.total
            print(
                f"[{pct:5.1f}%] {steps:,}/{self.total:,} {self.unit}, {rate:.1f} {self.unit.split()[-1]}/s, "
                f"return {post['return']}, eval {post['eval']}",
                file=self.out,
                flush=True,
            )
            self._last_line, self._last_steps = now, steps

    def note(self, message: str) -> None:
        """Say an event (an env restart, an interrupt, an early stop): always, with or
        without progress output, since a log without it would hide what happened."""
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, file=self.out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"
