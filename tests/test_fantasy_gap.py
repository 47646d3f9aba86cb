"""The fantasy gap: its maths against hand computations, and on a real agent's episodes."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from test_diagnostics import fixture_agent

from dreamrl.diagnostics.fantasy import (
    discounted_returns,
    fantasy_gap,
    fantasy_horizons,
    gap_summary,
    imagined_returns,
    pad_episodes,
    pick_starts,
)


def test_discounted_returns_by_hand():
    reward = torch.tensor([0.0, 1.0, 2.0, 4.0])
    # Ends in a terminal state: G_3 = 0, G_2 = 4, G_1 = 2 + 0.5 * 4 = 4, G_0 = 1 + 0.5 * 4 = 3.
    terminal = torch.tensor([False, False, False, True])
    assert discounted_returns(reward, terminal, 99.0, 0.5).tolist() == [3.0, 4.0, 4.0, 0.0]
    # Cut by a time limit: the last state is bootstrapped with its value, 8.
    # G_3 = 8, G_2 = 4 + 0.5 * 8 = 8, G_1 = 2 + 4 = 6, G_0 = 1 + 3 = 4.
    cut = torch.zeros(4, dtype=torch.bool)
    assert discounted_returns(reward, cut, 8.0, 0.5).tolist() == [4.0, 6.0, 8.0, 8.0]


def test_imagined_returns_by_hand():
    # One start, two imagined steps: rewards 1 and 2, continues 0.5 and 1, values 10, 4, 6.
    reward = torch.tensor([[0.0, 1.0, 2.0]])
    cont = torch.tensor([[1.0, 0.5, 1.0]])
    value = torch.tensor([[10.0, 4.0, 6.0]])
    lam, disc = 0.5, 1.0
    out = imagined_returns(reward, cont, value, [1, 2], disc, lam)
    h1 = 1 + 0.5 * 4  # r_1 + c_1 v_1
    h2 = 1 + 0.5 * ((1 - lam) * 4 + lam * (2 + 1.0 * 6))  # r_1 + c_1 ((1-λ) v_1 + λ (r_2 + c_2 v_2))
    assert out.tolist() == [[pytest.approx(h1)], [pytest.approx(h2)]]
    with pytest.raises(ValueError, match="horizon 3"):
        imagined_returns(reward, cont, value, [3], disc, lam)


def test_gap_summary_by_hand():
    imagined = torch.tensor([[3.0, 5.0], [4.0, 0.0]])  # [2 horizons, 2 starts]
    real = torch.tensor([2.0, 4.0])
    s = gap_summary(imagined, real, [1, 5])
    assert s == {
        "horizons": [1, 5],
        "imagined": [4.0, 2.0],
        "real": 3.0,
        "gap": [1.0, -1.0],
        "abs_gap": [1.0, 3.0],
        "starts": 2,
    }


def test_horizons_and_starts():
    assert fantasy_horizons(15) == (1, 5, 15)
    assert fantasy_horizons(50) == (1, 5, 15, 50)
    e, t = pick_starts([5, 3], first=1, count=100)
    assert list(zip(e.tolist(), t.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 1)]
    e, t = pick_starts([100], first=0, count=3)
    assert t.tolist() == [0, 49, 98]
    padded = pad_episodes([{"reward": np.array([1.0, 2.0])}, {"reward": np.array([5.0])}])
    assert padded["reward"].tolist() == [[1.0, 2.0], [5.0, 5.0]]


def test_fantasy_gap_of_a_trained_agent_on_its_episodes():
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    agent = fixture_agent()
    result = evaluate(agent, functools.partial(make_env, agent.config, None), [1, 2], 2, record=True)
    gap = fantasy_gap(agent, result.episodes, context=4, max_starts=32)
    assert gap is not None and gap["horizons"] == [1, 5, 15] and 0 < gap["starts"] <= 32
    assert all(np.isfinite(gap["imagined"])) and np.isfinite(gap["real"])
    assert gap["gap"] == pytest.approx([i - gap["real"] for i in gap["imagined"]])
    again = fantasy_gap(agent, result.episodes, context=4, max_starts=32)
    assert again == gap  # seeded
    assert fantasy_gap(agent, result.episodes, context=10_000) is None


def test_the_diagnostics_carry_the_fantasy_gap(tmp_path):
    import json

    from dreamrl.diagnostics import run_diagnostics
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    agent = fixture_agent()
    result = evaluate(agent, functools.partial(make_env, agent.config, None), [1, 2], 2, record=True)
    d = run_diagnostics(agent, result.episodes, tmp_path, step=300, context=4, horizon=3)
    assert d is not None and d["fantasy_gap"]["horizons"] == [1, 5, 15]
    assert "Fantasy gap" in d["summary"]
    saved = json.loads((tmp_path / "diagnose-000000000300.json").read_text())
    assert saved["fantasy_gap"] == d["fantasy_gap"]
