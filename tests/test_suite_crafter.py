"""The Crafter suite (``crafter``): spaces, seeding and episode ends.

World generation costs about a second per reset on a small CPU, so the tests share
one env where they can.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("crafter", reason="the Crafter suite needs crafter: pip install 'dreamrl[crafter]'")

from dreamrl.config import ConfigError, build_config
from dreamrl.envs import make_env
from dreamrl.envs.crafter import CrafterEnv, flags

STEP_KEYS = {"image", "reward", "is_first", "is_last", "is_terminal"}
MOVE_RIGHT = 2  # crafter.constants.actions.index('move_right')


@pytest.fixture(scope="module")
def env():
    env = make_env(build_config(["crafter"], {"task": "crafter"}), seed=0)
    yield env
    env.close()


def test_spaces_reset_and_steps(env):
    assert set(env.obs_space) == {"image"}
    assert env.obs_space["image"].dtype == "uint8" and env.obs_space["image"].shape == (64, 64, 3)
    assert env.act_space.dtype == "int32" and env.act_space.classes == 17
    step = env.reset()
    assert set(step) == STEP_KEYS and step["is_first"] and not step["is_last"]
    assert step["image"].dtype == np.uint8 and step["image"].shape == (64, 64, 3)
    for i in range(50):
        step = env.step(i % 17)
        assert step["image"].dtype == np.uint8 and step["image"].shape == (64, 64, 3)
        assert step["reward"].dtype == np.float32
        assert not step["is_first"]
    # The raw frame is the model's image: Agent.act can take crafter's observations.
    raw = env.env.render()
    np.testing.assert_array_equal(env.obs_converter(raw)["image"], raw)


def test_reset_seed_picks_the_world(env):
    first = env.reset(3)["image"]
    env.step(MOVE_RIGHT)
    np.testing.assert_array_equal(env.reset(3)["image"], first)
    assert not np.array_equal(env.reset(4)["image"], first)
    # Without a seed the next episode is a new world of the same sequence.
    assert not np.array_equal(env.reset()["image"], first)


def test_length_limit_is_last_without_is_terminal():
    env = CrafterEnv((64, 64), seed=0, length=5)
    env.reset()
    steps = [env.step(0) for _ in range(5)]
    assert not any(s["is_last"] for s in steps[:-1])
    assert steps[-1]["is_last"] and not steps[-1]["is_terminal"]


def test_death_is_last_and_is_terminal(env):
    """Walking into lava kills at once: lay some beside the player and step onto it."""
    env.reset(0)
    world, player = env.env._world, env.env._player
    world[player.pos + np.array([1, 0])] = "lava"
    step = env.step(MOVE_RIGHT)
    assert step["is_last"] and step["is_terminal"]


def test_flags():
    assert flags(False, {"discount": 1.0}) == (False, False)
    assert flags(True, {"discount": 1.0}) == (True, False)  # the length limit
    assert flags(True, {"discount": 0.0}) == (True, True)  # death
    assert flags(True, {"discount": 0.0}) == flags(True, {"discount": 0})


@pytest.mark.parametrize("action", [-1, 17, 2.5])
def test_actions_out_of_range_are_refused(env, action):
    with pytest.raises(ValueError, match=f"action {action}"):
        env.step(action)


def test_missing_crafter_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "crafter", None)  # a None entry makes the import fail
    with pytest.raises(ConfigError, match=r"dreamrl\[crafter\]"):
        make_env(build_config(["crafter"], {"task": "crafter"}), seed=0)


def test_a_seed_replays_its_episode_whatever_ran_before():
    """Crafter keeps each chunk's creatures in a set, ordered by memory address, and picks
    the one to despawn by index into it: the same seed could play out differently after
    other episodes had run in the process. Evaluation on fixed seeds needs it repeatable."""
    env = CrafterEnv((64, 64), seed=0)
    rng = np.random.default_rng(0)
    env.reset(0)
    for _ in range(300):  # other play first, leaving its objects on the heap
        env.step(int(rng.integers(17)))
    episodes = []
    for _ in range(2):
        actions = np.random.default_rng(1)
        frames = [env.reset(1)["image"]]
        frames += [env.step(int(actions.integers(17)))["image"] for _ in range(400)]
        episodes.append(np.stack(frames))
    np.testing.assert_array_equal(episodes[0], episodes[1])
