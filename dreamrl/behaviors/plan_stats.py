"""What planning costs and changes, measured while the agent acts: :class:`PlanStats`.

Three questions, each answered per env step planned:

- cost: seconds per planning call (all envs at once) and planned env steps per second;
- how the plan departs from the actor: :func:`compare_to_actor` says whether the
  planner's first action differs from the actor's mode and by how much;
- whether the plan's promise holds: the rewards the planner predicted over its horizon
  against the rewards then received. A *window* opens at each planned step with the
  chosen sequence's predicted rewards (its planned return without the critic's value)
  and collects the discounted rewards of the next ``H`` real steps as they arrive
  (:func:`receive`, :func:`open_windows`); once whole, it is a pair (planned, received).

The open windows are part of the agent's policy state (:class:`ReturnWindows`), carried
like the plan itself, so that envs that finish and are dropped (evaluation) take their
windows with them. Everything here is a few operations on ``[N, H]`` tensors per step.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple, Protocol

import torch

# A continuous first action "differs" from the actor's when some dimension is further
# than this from the actor's mean: 5% of the action range [-1, 1].
DIFFERS_TOLERANCE = 0.1


class ActorDist(Protocol):
    """The actor's distribution as the comparison reads it (``ActionDist`` is one)."""

    def mode(self) -> torch.Tensor: ...

    def logp(self, action: torch.Tensor) -> torch.Tensor: ...


def compare_to_actor(
    action: torch.Tensor, actor: ActorDist, discrete: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether the planner's first actions ``action [N, A]`` (model format) differ from
    the actor's mode, ``[N]`` bool, and by how much, ``[N]``.

    Discrete (one-hot): another action; by how much, the actor's probability of its own
    choice minus its probability of the planner's (0 when they agree, up to 1).
    Continuous: some dimension further than :data:`DIFFERS_TOLERANCE` from the actor's
    mean; by how much, the mean absolute difference over the dimensions.
    """
    mode = actor.mode()
    if discrete:
        differs = action.argmax(-1) != mode.argmax(-1)
        gap = actor.logp(mode).float().exp() - actor.logp(action.to(mode.dtype)).float().exp()
        return differs, gap
    diff = (action.float() - mode.float()).abs()
    return diff.amax(-1) > DIFFERS_TOLERANCE, diff.mean(-1)


# ----------------------------------------------------------------------------- windows


class ReturnWindows(NamedTuple):
    """The windows still open for ``N`` envs, ``[N, H]``: column ``k`` is the window opened
    ``k + 1`` steps before the step about to arrive, which brings its ``k + 1``-th reward."""

    planned: torch.Tensor  # [N, H] predicted discounted rewards over the horizon
    received: torch.Tensor  # [N, H] discounted rewards received so far
    open: torch.Tensor  # [N, H] bool: a window is there

    def select(self, rows: torch.Tensor) -> ReturnWindows:
        """The windows of envs ``rows [M]``."""
        return ReturnWindows(self.planned[rows], self.received[rows], self.open[rows])


def empty_windows(n: int, horizon: int, device: torch.device | str | None = None) -> ReturnWindows:
    """No window open, for ``n`` envs and a plan of ``horizon`` steps."""
    zeros = torch.zeros(n, horizon, device=device)
    return ReturnWindows(zeros, zeros.clone(), torch.zeros(n, horizon, dtype=torch.bool, device=device))


def receive(
    windows: ReturnWindows,
    reward: torch.Tensor,
    is_first: torch.Tensor,
    is_last: torch.Tensor,
    is_terminal: torch.Tensor,
    discount: float,
) -> tuple[ReturnWindows, torch.Tensor, torch.Tensor]:
    """Take in the step that arrived, ``[N]`` each: its reward goes to every open window,
    weighted ``discount ** k`` in column ``k``. Returns the windows still open and the
    (planned, received) pairs ``[M]`` of those that closed whole.

    A window closes whole after ``H`` rewards, or at a terminal step (no reward follows).
    It is dropped at a step that ends the episode by a time limit (``is_last`` without
    ``is_terminal``: the rest of its rewards never come), and at a step that starts one
    (``is_first``: the previous episode's end was never seen, as in evaluation, which
    gives the policy no last step). The reward of an ``is_first`` step counts for nothing.
    """
    H = windows.planned.shape[1]
    col = torch.arange(H, device=reward.device)
    open_ = windows.open & ~is_first.bool()[:, None]
    weight = torch.as_tensor(discount, dtype=torch.float32, device=reward.device) ** col
    received = windows.received + open_ * weight * reward.float()[:, None]
    whole = open_ & ((col == H - 1)[None] | is_terminal.bool()[:, None])
    still = open_ & ~whole & ~is_last.bool()[:, None]
    return ReturnWindows(windows.planned, received, still), windows.planned[whole], received[whole]


def open_windows(windows: ReturnWindows, planned: torch.Tensor, opened: torch.Tensor) -> ReturnWindows:
    """Each column one step older, and a new window in column 0 with ``planned [N]`` for
    the envs ``opened [N]`` (bool) planned from. The oldest column was closed by
    :func:`receive`."""
    return ReturnWindows(
        torch.cat([planned.float()[:, None], windows.planned[:, :-1]], 1),
        torch.cat([torch.zeros_like(windows.received[:, :1]), windows.received[:, :-1]], 1),
        torch.cat([opened.bool()[:, None], windows.open[:, :-1]], 1),
    )


# ----------------------------------------------------------------------------- statistics


@dataclass
class PlanStats:
    """Sums over the steps planned since the last :meth:`summary` (see the module
    docstring); :meth:`summary` turns them into ``mpc/*`` means."""

    steps: int = 0  # env steps planned (N envs planned together count N)
    calls: int = 0
    seconds: float = 0.0
    differ: float = 0.0  # env steps whose first action differs from the actor's
    gap: float = 0.0  # how much it differs, summed (see compare_to_actor)
    planned: float = 0.0  # planned returns (value included), summed
    windows: int = 0  # windows closed whole
    window_planned: float = 0.0
    window_received: float = 0.0
    window_abs_error: float = 0.0

    def add(
        self, seconds: float, differs: torch.Tensor, gap: torch.Tensor, planned_return: torch.Tensor
    ) -> None:
        """One planning call over ``N`` envs: :func:`compare_to_actor`'s ``differs`` and
        ``gap`` and the planned returns, ``[N]`` each."""
        sums = torch.stack([differs.float().sum(), gap.float().sum(), planned_return.float().sum()])
        differ, gap_sum, planned = sums.tolist()  # one device sync for the three
        self.steps += len(differs)
        self.calls += 1
        self.seconds += seconds
        self.differ += differ
        self.gap += gap_sum
        self.planned += planned

    def add_windows(self, planned: torch.Tensor, received: torch.Tensor) -> None:
        """Windows closed whole: their predicted and received rewards ``[M]``."""
        if not len(planned):
            return
        sums = torch.stack([planned.sum(), received.sum(), (planned - received).abs().sum()])
        p, r, e = sums.tolist()
        self.windows += len(planned)
        self.window_planned += p
        self.window_received += r
        self.window_abs_error += e

    def summary(self, reset: bool = True) -> dict[str, float]:
        """``mpc/*`` figures (empty when nothing was planned); starts afresh when ``reset``.

        ``ms_per_call``, ``planned_steps_per_s``; ``differs_from_actor`` (share of steps)
        and ``differs_by`` (mean gap); ``planned_return`` (with the critic's value);
        over the windows closed whole, ``horizon_planned`` and ``horizon_received`` (mean
        discounted rewards over the horizon), ``horizon_error`` (planned minus received),
        ``horizon_abs_error`` and ``horizon_windows`` (how many)."""
        if not self.calls:
            return {}
        out = {
            "mpc/ms_per_call": 1000 * self.seconds / self.calls,
            "mpc/planned_steps_per_s": self.steps / self.seconds if self.seconds else float("inf"),
            "mpc/differs_from_actor": self.differ / self.steps,
            "mpc/differs_by": self.gap / self.steps,
            "mpc/planned_return": self.planned / self.steps,
        }
        if self.windows:
            out["mpc/horizon_planned"] = self.window_planned / self.windows
            out["mpc/horizon_received"] = self.window_received / self.windows
            out["mpc/horizon_error"] = (self.window_planned - self.window_received) / self.windows
            out["mpc/horizon_abs_error"] = self.window_abs_error / self.windows
            out["mpc/horizon_windows"] = float(self.windows)
        if reset:
            for f in fields(self):
                setattr(self, f.name, f.default)
        return out


__all__ = [
    "DIFFERS_TOLERANCE",
    "PlanStats",
    "ReturnWindows",
    "compare_to_actor",
    "empty_windows",
    "open_windows",
    "receive",
]
