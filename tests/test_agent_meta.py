"""agent.json: the keys every agent writes (dreamrl.agents.meta) and reading them back."""

import json
from types import SimpleNamespace

import pytest
import torch

from dreamrl import __version__
from dreamrl.agents.meta import agent_meta, read_agent_meta
from dreamrl.config import build_config
from dreamrl.rundir import AGENT_META
from dreamrl.spaces import Space


def fake_agent():
    return SimpleNamespace(
        config=build_config(["debug"], {"task": "CartPole-v1"}),
        obs_space={"image": Space("uint8", (16, 16, 3)), "vector": Space("float32", (4,))},
        act_space=Space("int32", (), classes=2),
        obs_converter=None,
        act_converter=None,
        updates=7,
    )


def test_written_keys_read_back_as_they_were(tmp_path):
    agent = fake_agent()
    meta = agent_meta(agent, 1)
    versions = (meta["format"], meta["dreamrl"], meta["torch"])
    assert versions == (1, __version__, torch.__version__) and meta["updates"] == 7
    (tmp_path / AGENT_META).write_text(json.dumps(meta))
    back = read_agent_meta(tmp_path, 1)
    assert back.config == agent.config
    assert back.obs_space == agent.obs_space
    assert back.act_space == agent.act_space
    assert (back.obs_converter, back.act_converter) == (None, None)
    assert back.raw["updates"] == 7


def test_a_newer_format_is_refused_naming_the_directory(tmp_path):
    (tmp_path / AGENT_META).write_text(json.dumps(agent_meta(fake_agent(), 2)))
    with pytest.raises(ValueError, match=f"{tmp_path}: agent format 2 is newer than this dreamrl"):
        read_agent_meta(tmp_path, 1)
    assert read_agent_meta(tmp_path, 2).raw["format"] == 2
