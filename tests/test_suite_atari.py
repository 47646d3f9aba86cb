"""The Atari suite (``atari:<game>``): spaces, preprocessing, seeding and episode ends."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("ale_py", reason="the Atari suite needs ale-py: pip install 'dreamrl[atari]'")
pytest.importorskip("cv2", reason="AtariPreprocessing resizes with opencv: pip install 'dreamrl[atari]'")

from dreamrl.config import ConfigError, build_config
from dreamrl.envs import make_env
from dreamrl.envs.atari import build

STEP_KEYS = {"image", "reward", "is_first", "is_last", "is_terminal"}


def atari(presets: list[str], game: str = "pong", seed: int | None = 0, **overrides):
    return make_env(build_config(presets, {"task": f"atari:{game}", **overrides}), seed=seed)


def frames(env, seed: int | None, steps: int = 40) -> np.ndarray:
    """The frames of one episode start under a fixed action sequence."""
    out = [env.reset(seed)["image"]]
    out += [env.step((i * 7) % env.act_space.classes)["image"] for i in range(steps)]
    return np.stack(out)


@pytest.mark.parametrize(
    ("presets", "shape", "actions"),
    [(["atari"], (96, 96, 1), 18), (["atari100k"], (64, 64, 3), 6)],  # Pong needs 6 actions
)
def test_spaces_reset_and_steps(presets, shape, actions):
    env = atari(presets)
    assert set(env.obs_space) == {"image"}
    assert env.obs_space["image"].dtype == "uint8" and env.obs_space["image"].shape == shape
    assert env.act_space.dtype == "int32" and env.act_space.classes == actions
    step = env.reset()
    assert set(step) == STEP_KEYS and step["is_first"] and not step["is_last"]
    assert step["image"].dtype == np.uint8 and step["image"].shape == shape
    for i in range(50):
        step = env.step(i % actions)
        assert step["image"].dtype == np.uint8 and step["image"].shape == shape
        assert step["reward"].dtype == np.float32
        assert not step["is_first"] and not step["is_last"]
    env.close()


def test_equal_seeds_give_equal_episodes():
    """Sticky actions and the no-op count are random: both follow the reset seed."""
    env = atari(["atari"], seed=None)
    a, b = frames(env, 0), frames(env, 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, frames(env, 1))  # Pong's first frame is the same; play diverges
    env.close()


def test_game_names_follow_dreamerv3():
    env = atari(["atari100k"], game="ms_pacman")
    assert env.env.spec.id == "ALE/MsPacman-v5"
    env.close()
    with pytest.raises(ConfigError, match=r"pongg.*did you mean pong"):
        atari(["atari"], game="pongg")


def test_time_limit_is_last_without_is_terminal():
    env = build("pong", build_config(["atari"]).env.atari, seed=0, max_frames=200)
    env.reset()
    for _ in range(60):  # 200 frames: at most 50 steps of 4 frames, fewer after the no-ops
        step = env.step(0)
        if step["is_last"]:
            break
    assert step["is_last"] and not step["is_terminal"]
    env.close()


def test_game_over_is_last_and_is_terminal():
    """Breakout under random play loses its five lives in about 200 steps; a life lost
    alone does not end the episode."""
    env = atari(["atari100k"], game="breakout")
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(3000):
        step = env.step(int(rng.integers(env.act_space.classes)))
        if step["is_last"]:
            break
    assert step["is_last"] and step["is_terminal"]
    env.close()


@pytest.mark.parametrize("action", [-1, 6, 100])
def test_actions_out_of_range_are_refused(action):
    env = atari(["atari100k"])
    env.reset()
    with pytest.raises(ValueError, match=f"action {action}"):
        env.step(action)
    env.close()


def test_bad_settings_name_their_field():
    with pytest.raises(ConfigError, match=r"env\.atari\.size"):
        atari(["atari"], **{"env.atari.size": (64, 96)})
    with pytest.raises(ConfigError, match=r"env\.atari\.actions"):
        atari(["atari"], **{"env.atari.actions": "some"})


def test_missing_ale_py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # a None entry makes the import fail
    with pytest.raises(ConfigError, match=r"dreamrl\[atari\]"):
        atari(["atari"])
