"""agent.kind picks the function that trains a run dir (dreamrl.agents.TRAINERS)."""

from __future__ import annotations

import pytest

from dreamrl.agents import TRAINERS, trainer_for
from dreamrl.config import build_config
from dreamrl.run.train import train


def test_dreamer_kind_trains_with_dreamrls_loop():
    assert trainer_for(build_config(["debug"], {})) is train


def test_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"agent\.kind") as info:
        build_config(["debug"], {"agent.kind": "nosuch"})
    assert all(name in str(info.value) for name in TRAINERS)
