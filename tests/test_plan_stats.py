"""What planning measures (dreamrl.behaviors.plan_stats): planned rewards matched with the
rewards received over the horizon, through terminals, time limits and resets; the
planner's first action against the actor's; the sums and their summary."""

from __future__ import annotations

import pytest
import torch

from dreamrl.behaviors.plan_stats import (
    PlanStats,
    compare_to_actor,
    empty_windows,
    open_windows,
    receive,
)
from dreamrl.nets.heads import BoundedNormalDist, OneHotDist

GAMMA = 0.9


def flags(n: int, **set_rows: list[int]) -> dict[str, torch.Tensor]:
    out = {k: torch.zeros(n, dtype=torch.bool) for k in ("is_first", "is_last", "is_terminal")}
    for key, rows in set_rows.items():
        out[key][rows] = True
    return out


def step(windows, reward, planned, **set_rows):
    """One env step for every env: the reward arrives, then the plan made there opens a
    window (unless the step ends the episode). Returns the windows and the closed pairs."""
    f = flags(len(reward), **set_rows)
    windows, p, r = receive(
        windows, torch.tensor(reward), f["is_first"], f["is_last"], f["is_terminal"], GAMMA
    )
    return open_windows(windows, torch.tensor(planned), ~f["is_last"]), p, r


def test_a_window_collects_the_next_horizon_of_discounted_rewards():
    windows = empty_windows(1, 3)
    windows, p, r = step(windows, [0.0], [10.0], is_first=[0])  # planned at the first step
    assert len(p) == 0
    closed = []
    for t, reward in enumerate([1.0, 2.0, 4.0, 8.0]):
        windows, p, r = step(windows, [reward], [20.0 + t])
        closed += list(zip(p.tolist(), r.tolist()))
    # The window of step 0 closes with rewards 1, 2, 4; that of step 1 with 2, 4, 8.
    assert closed == [
        (10.0, pytest.approx(1 + GAMMA * 2 + GAMMA**2 * 4)),
        (20.0, pytest.approx(2 + GAMMA * 4 + GAMMA**2 * 8)),
    ]
    assert windows.open[0].tolist() == [True, True, True]  # the last three steps' windows wait


def test_a_terminal_closes_every_window_a_time_limit_drops_them():
    windows = empty_windows(2, 3)
    windows, _, _ = step(windows, [0.0, 0.0], [5.0, 6.0], is_first=[0, 1])
    windows, _, _ = step(windows, [1.0, 1.0], [7.0, 8.0])
    # env 0 ends in a terminal state, env 1 at a time limit, both with reward 2.
    windows, p, r = step(windows, [2.0, 2.0], [0.0, 0.0], is_last=[0, 1], is_terminal=[0])
    assert sorted(zip(p.tolist(), r.tolist())) == [(5.0, pytest.approx(1 + GAMMA * 2)), (7.0, 2.0)]
    assert not windows.open.any()  # nothing opened on the last step, nothing left of env 1


def test_a_reset_drops_windows_whose_episode_end_was_never_seen():
    windows = empty_windows(1, 3)
    windows, _, _ = step(windows, [0.0], [5.0], is_first=[0])
    windows, _, _ = step(windows, [1.0], [6.0])
    # Evaluation gives the policy no last step: the next call is the next episode's first.
    windows, p, _ = step(windows, [100.0], [7.0], is_first=[0])
    assert len(p) == 0
    assert windows.open[0].tolist() == [True, False, False] and windows.received[0, 0] == 0
    kept = windows.select(torch.tensor([0, 0]))
    assert kept.planned.shape == (2, 3) and kept.planned[1, 0] == 7.0


def test_the_first_action_is_compared_with_the_actors():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    dist = OneHotDist(logits)
    plan = torch.nn.functional.one_hot(torch.tensor([1, 2]), 3).float()
    differs, gap = compare_to_actor(plan, dist, discrete=True)
    assert differs.tolist() == [True, False]
    assert torch.allclose(gap, torch.tensor([0.7 - 0.2, 0.0]))
    normal = BoundedNormalDist(torch.tensor([[0.0, 0.5], [0.2, 0.2]]), torch.ones(2, 2))
    differs, gap = compare_to_actor(torch.tensor([[0.05, 0.5], [0.6, 0.2]]), normal, discrete=False)
    assert differs.tolist() == [False, True]  # 0.05 is within the tolerance, 0.4 is not
    assert torch.allclose(gap, torch.tensor([0.025, 0.2]))


def test_stats_sum_per_env_step_and_start_afresh_when_read():
    stats = PlanStats()
    assert stats.summary() == {}
    stats.add(0.5, torch.tensor([True, False]), torch.tensor([0.4, 0.0]), torch.tensor([3.0, 5.0]))
    stats.add(0.5, torch.tensor([True, True]), torch.tensor([0.2, 0.2]), torch.tensor([0.0, 0.0]))
    out = stats.summary(reset=False)
    assert out["mpc/ms_per_call"] == 500 and out["mpc/planned_steps_per_s"] == 4
    assert out["mpc/differs_from_actor"] == 0.75 and out["mpc/differs_by"] == pytest.approx(0.2)
    assert out["mpc/planned_return"] == 2.0 and "mpc/horizon_windows" not in out
    stats.add_windows(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 6.0]))
    out = stats.summary()
    assert out["mpc/horizon_planned"] == 3.0 and out["mpc/horizon_received"] == 3.5
    assert out["mpc/horizon_error"] == -0.5 and out["mpc/horizon_abs_error"] == 1.5
    assert out["mpc/horizon_windows"] == 2
    assert stats.summary() == {} and stats.windows == 0
