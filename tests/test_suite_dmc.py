"""DeepMind Control suite: builds and steps headless, keys follow the presets, time
limits are truncations, seeds reproduce episodes, and distractors change pixels only."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from dreamrl.config import ConfigError, build_config
from dreamrl.envs import make_env
from dreamrl.envs.dmc import parse_task, select_gl_backend

# Checked without importing: dm_control picks its GL backend when first imported.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("dm_control") is None,
    reason="dm_control is not installed (pip install 'dreamrl[dmc]')",
)


def env_for(presets, task="dmc:cartpole_balance", mode="train", seed=0, **overrides):
    return make_env(build_config(presets, {"task": task, **overrides}), seed, mode)


def rollout(env, steps, seed, action=0.3):
    out = [env.reset(seed=seed)]
    for _ in range(steps):
        out.append(env.step(np.full(env.act_space.shape, action, np.float32)))
    return out


def test_vision_preset_gives_images_only():
    env = env_for(["dmc_vision"])
    try:
        assert set(env.obs_space) == {"image"}
        assert env.obs_space["image"].shape == (64, 64, 3) and env.obs_space["image"].dtype == "uint8"
        steps = rollout(env, 3, seed=1)
        assert steps[0]["is_first"] and not steps[1]["is_first"]
        assert steps[-1]["image"].dtype == np.uint8 and steps[-1]["image"].std() > 0
        assert steps[-1]["reward"].dtype == np.float32
    finally:
        env.close()


def test_proprio_preset_gives_vectors_and_time_limit_truncates():
    env = env_for(["dmc_proprio"])
    try:
        assert set(env.obs_space) == {"position", "velocity"}
        steps = rollout(env, 1000, seed=2)
        assert not any(s["is_last"] for s in steps[:-1])
        assert steps[-1]["is_last"] and not steps[-1]["is_terminal"]  # the 1,000-step limit
    finally:
        env.close()


def test_action_repeat_shortens_the_episode():
    env = env_for(["dmc_proprio"], **{"env.repeat": 2})
    try:
        steps = rollout(env, 500, seed=2)
        assert steps[-1]["is_last"] and not any(s["is_last"] for s in steps[:-1])
    finally:
        env.close()


def test_same_seed_same_episode_and_different_seed_differs():
    env = env_for(["dmc_proprio"], task="dmc:cartpole_swingup")
    try:
        a, b, c = rollout(env, 20, 5), rollout(env, 20, 5), rollout(env, 20, 6)
        assert all(np.array_equal(x["position"], y["position"]) for x, y in zip(a, b))
        assert not np.array_equal(a[0]["position"], c[0]["position"])
    finally:
        env.close()


@pytest.mark.parametrize("kind", ["color", "noise"])
def test_distractors_change_pixels_but_not_the_state(kind):
    plain = env_for(["dmc_vision"], **{"env.dmc.proprio": True})
    distracted = env_for(["dmc_vision"], **{"env.dmc.proprio": True, "env.dmc.distractor": kind})
    try:
        a, b = rollout(plain, 5, seed=3), rollout(distracted, 5, seed=3)
        for x, y in zip(a, b):
            assert np.array_equal(x["position"], y["position"])
            assert np.array_equal(x["velocity"], y["velocity"])
            assert x["reward"] == y["reward"]
            assert not np.array_equal(x["image"], y["image"])
        background = b[1]["image"][:8, :8].astype(int)  # a patch of sky in every frame
        later = b[4]["image"][:8, :8].astype(int)
        if kind == "noise":
            assert np.abs(background - later).sum() > 0  # the noise drifts
        else:
            assert np.array_equal(background, later)  # one colour per episode
            other = rollout(distracted, 1, seed=4)[0]["image"][:8, :8]
            assert not np.array_equal(other, b[0]["image"][:8, :8])
    finally:
        plain.close()
        distracted.close()


def test_eval_distractor_applies_in_eval_mode_only():
    overrides = {"env.dmc.eval_distractor": "color"}
    train_env = env_for(["dmc_vision"], mode="train", **overrides)
    eval_env = env_for(["dmc_vision"], mode="eval", **overrides)
    try:
        assert train_env.distractor is None and eval_env.distractor is not None
    finally:
        train_env.close()
        eval_env.close()


def test_task_names():
    select_gl_backend()
    assert parse_task("cartpole_balance") == ("cartpole", "balance")
    assert parse_task("point_mass_easy") == ("point_mass", "easy")
    assert parse_task("cup_catch") == ("ball_in_cup", "catch")
    with pytest.raises(ConfigError, match="walker_fly"):
        parse_task("walker_fly")


def test_every_suite_task_builds_and_steps():
    select_gl_backend()  # before dm_control's first import, as make_env does
    from dm_control import suite

    for domain, task in suite.ALL_TASKS:
        name = f"dmc:{domain}_{task}"
        env = env_for(["dmc_proprio"], task=name)
        try:
            first = env.reset(seed=0)
            step = env.step(np.zeros(env.act_space.shape, np.float32))
            assert first["is_first"] and not step["is_first"], name
            assert all(np.isfinite(step[k]).all() for k in env.obs_space), name
        finally:
            env.close()
