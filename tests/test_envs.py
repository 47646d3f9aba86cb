"""The gymnasium adapter, observation/action converters, env pools and env seeds."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces as gs

from dreamrl.config import Config, ConfigError, build_config
from dreamrl.envs import (
    EVAL_STREAM,
    TEST_STREAM,
    TRAIN_STREAM,
    ActionConverter,
    GymEnv,
    ObsConverter,
    Space,
    check_task,
    env_seed,
    make_env,
)
from dreamrl.envs.pool import EnvPool

STEP_KEYS = {"vector", "reward", "is_first", "is_last", "is_terminal"}
ASYMMETRIC_BOX = gs.Box(np.array([0.0, -1.0], np.float32), np.array([10.0, 3.0], np.float32))


def cartpole(max_steps: int | None = None, seed: int | None = 0, **kwargs) -> GymEnv:
    env = gymnasium.make("CartPole-v1", max_episode_steps=max_steps, **kwargs)
    return GymEnv(env, (64, 64), seed=seed)


def check_step_dtypes(step: dict) -> None:
    assert set(step) == STEP_KEYS
    assert step["vector"].dtype == np.float32 and step["vector"].shape == (4,)
    assert step["reward"].dtype == np.float32 and np.shape(step["reward"]) == ()
    for key in ("is_first", "is_last", "is_terminal"):
        assert step[key].dtype == np.bool_, key


# ----------------------------------------------------------------------------- GymEnv


def test_check_task_refuses_an_unregistered_gymnasium_id_and_leaves_the_rest_to_make_env():
    check_task("CartPole-v1")
    for left_to_make_env in ("dmc:walker_walk", "atari:pong", "crafter", "fixtures.tiny_env:TinyLine-v0"):
        check_task(left_to_make_env)  # suites and module ids register (or fail) when made
    with pytest.raises(ConfigError, match=r"--env CartPole-v9: .*\[ `v0`, `v1` \]"):
        check_task("CartPole-v9")
    # A namespace no package registers (ALE/ would do only until a test imports ale_py,
    # which registers it for the rest of the process).
    with pytest.raises(ConfigError, match=r"--env NoSuchSuite/Pong-v5: .*Namespace NoSuchSuite not found"):
        check_task("NoSuchSuite/Pong-v5")
    with pytest.raises(ConfigError, match="no environment given"):
        check_task("")


def test_cartpole_step_dicts():
    env = cartpole()
    assert env.obs_space == {"vector": Space("float32", (4,))}
    assert env.act_space == Space("int32", (), 2)
    first = env.reset()
    check_step_dtypes(first)
    assert bool(first["is_first"]) and not first["is_last"] and not first["is_terminal"]
    assert float(first["reward"]) == 0.0
    nxt = env.step(1)
    check_step_dtypes(nxt)
    assert not nxt["is_first"] and float(nxt["reward"]) == 1.0
    env.close()


def test_constructor_seed_makes_first_reset_reproducible():
    a, b = cartpole(seed=3), cartpole(seed=3)
    assert np.array_equal(a.reset()["vector"], b.reset()["vector"])
    # A later reset continues the env's own stream instead of reusing the seed.
    first = cartpole(seed=3).reset()["vector"]
    assert not np.array_equal(a.reset()["vector"], first)


def test_time_limit_truncation_is_last_not_terminal():
    env = cartpole(max_steps=5)
    env.reset()
    steps = [env.step(0) for _ in range(5)]
    assert [bool(s["is_last"]) for s in steps] == [False] * 4 + [True]
    assert not any(bool(s["is_terminal"]) for s in steps)


def test_real_termination_is_last_and_terminal():
    env = cartpole()  # 500-step limit: pushing one way topples the pole long before
    env.reset()
    for _ in range(100):
        step = env.step(1)
        if step["is_last"]:
            break
    assert bool(step["is_last"]) and bool(step["is_terminal"])


def test_action_repeat_sums_rewards():
    env = GymEnv(gymnasium.make("CartPole-v1"), (64, 64), repeat=3, seed=0)
    env.reset()
    assert float(env.step(0)["reward"]) == 3.0


# ----------------------------------------------------------------------------- converters


def test_action_converter_rescales_and_clips_box():
    conv = ActionConverter.from_gym(gymnasium.make("Pendulum-v1").action_space)  # Box(-2, 2, (1,))
    assert conv.space == Space("float32", (1,))
    for action, expected in [(-1.0, -2.0), (1.0, 2.0), (0.0, 0.0), (0.5, 1.0), (5.0, 2.0), (-3.0, -2.0)]:
        out = conv(np.array([action], np.float32))
        assert out.dtype == np.float32 and out.shape == (1,)
        assert out[0] == pytest.approx(expected), action


def test_action_converter_asymmetric_box_and_discrete_offset():
    conv = ActionConverter.from_gym(ASYMMETRIC_BOX)
    np.testing.assert_allclose(conv(np.array([0.0, -0.5])), [5.0, 0.0])
    np.testing.assert_allclose(conv(np.array([-1.0, 1.0])), [0.0, 3.0])
    shifted = ActionConverter.from_gym(gs.Discrete(3, start=-1))
    assert shifted.space == Space("int32", (), 3)
    assert [shifted(i) for i in range(3)] == [-1, 0, 1]
    with pytest.raises(ValueError):
        ActionConverter.from_gym(gs.Box(-np.inf, np.inf, (2,)))


def test_obs_converter_discrete_is_onehot():
    conv = ObsConverter.from_gym(gs.Discrete(5), (64, 64))
    assert conv.spaces == {"vector": Space("float32", (5,))}
    out = conv(3)
    assert out["vector"].dtype == np.float32
    assert out["vector"].tolist() == [0, 0, 0, 1, 0]


def test_obs_converter_resizes_uint8_images():
    conv = ObsConverter.from_gym(gs.Box(0, 255, (32, 48, 3), np.uint8), (64, 64))
    assert conv.spaces == {"image": Space("uint8", (64, 64, 3))}
    frame = np.full((32, 48, 3), 100, np.uint8)
    frame[..., 1] = 200
    out = conv(frame)["image"]
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert (out[..., 0] == 100).all() and (out[..., 1] == 200).all()
    gray = ObsConverter.from_gym(gs.Box(0, 255, (40, 40, 1), np.uint8), (64, 64))
    assert gray.spaces == {"image": Space("uint8", (64, 64, 1))}
    out = gray(np.full((40, 40, 1), 9, np.uint8))["image"]
    assert out.shape == (64, 64, 1) and (out == 9).all()
    # A small uint8 box is a vector, not an image.
    small = ObsConverter.from_gym(gs.Box(0, 255, (4, 4), np.uint8), (64, 64))
    assert small.spaces == {"vector": Space("float32", (16,))}


def test_obs_converter_two_dimensional_frame_gets_channel_axis():
    for shape in ((40, 40), (64, 64)):
        conv = ObsConverter.from_gym(gs.Box(0, 255, shape, np.uint8), (64, 64))
        assert conv.spaces == {"image": Space("uint8", (64, 64, 1))}
        assert conv(np.zeros(shape, np.uint8))["image"].shape == (64, 64, 1)


def test_obs_converter_discrete_with_start_offset():
    conv = ObsConverter.from_gym(gs.Discrete(3, start=1), (64, 64))
    assert conv(1)["vector"].tolist() == [1, 0, 0]
    assert conv(3)["vector"].tolist() == [0, 0, 1]


def test_obs_converter_dict_keeps_keys():
    space = gs.Dict(
        {
            "pos": gs.Box(-1, 1, (2,), np.float32),
            "cam": gs.Box(0, 255, (16, 16, 3), np.uint8),
            "mode": gs.Discrete(3),
            "nested": gs.Dict({"speed": gs.Box(-5, 5, (1, 2), np.float32)}),
        }
    )
    conv = ObsConverter.from_gym(space, (64, 64))
    assert conv.spaces == {
        "pos": Space("float32", (2,)),
        "cam": Space("uint8", (64, 64, 3)),
        "mode": Space("float32", (3,)),
        "nested_speed": Space("float32", (2,)),
    }
    raw = {
        "pos": np.array([0.5, -0.5], np.float32),
        "cam": np.zeros((16, 16, 3), np.uint8),
        "mode": 2,
        "nested": {"speed": np.array([[1.0, 2.0]], np.float32)},
    }
    out = conv(raw)
    assert out["pos"].tolist() == [0.5, -0.5]
    assert out["mode"].tolist() == [0, 0, 1]
    assert out["nested_speed"].tolist() == [1.0, 2.0]
    assert out["cam"].shape == (64, 64, 3)


def test_pixels_use_the_render():
    env = GymEnv(gymnasium.make("CartPole-v1", render_mode="rgb_array"), (64, 64), pixels=True, seed=0)
    assert env.obs_space == {"image": Space("uint8", (64, 64, 3))}
    for step in (env.reset(), env.step(0)):
        assert set(step) == {"image", "reward", "is_first", "is_last", "is_terminal"}
        assert step["image"].dtype == np.uint8 and step["image"].shape == (64, 64, 3)
        assert step["image"].std() > 0  # a real picture, not a blank frame
    env.close()


def test_pixel_gym_envs_render_off_screen_without_display_errors():
    """``env.pixels`` on a headless machine: pygame's SDL must not look for a display
    (it printed ``error: XDG_RUNTIME_DIR is invalid`` on every env built)."""
    code = (
        "from dreamrl.config import build_config; from dreamrl.envs import make_env; import os;"
        "env = make_env(build_config([], {'task': 'CartPole-v1', 'env.pixels': True}), 0);"
        "print(env.reset()['image'].std() > 0, os.environ['SDL_VIDEODRIVER'])"
    )
    unset = ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "DISPLAY")
    environ = {k: v for k, v in os.environ.items() if k not in unset}
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "dummy"]
    assert "XDG_RUNTIME_DIR" not in done.stderr and "error" not in done.stderr.lower(), done.stderr


def test_converters_json_round_trip():
    space = gs.Dict(
        {
            "pos": gs.Box(-1, 1, (2,), np.float32),
            "mode": gs.Discrete(4),
            "cam": gs.Box(0, 255, (8, 8, 3), np.uint8),
        }
    )
    obs_conv = ObsConverter.from_gym(space, (48, 64))
    obs_back = ObsConverter.from_json(json.loads(json.dumps(obs_conv.to_json())))
    assert obs_back.to_json() == obs_conv.to_json()
    assert obs_back.spaces == obs_conv.spaces
    raw = space.sample()
    for key, value in obs_conv(raw).items():
        assert np.array_equal(obs_back(raw)[key], value), key
    for act_space in (ASYMMETRIC_BOX, gs.Discrete(3, start=2), gs.Discrete(5)):
        act_conv = ActionConverter.from_gym(act_space)
        act_back = ActionConverter.from_json(json.loads(json.dumps(act_conv.to_json())))
        assert act_back.space == act_conv.space
        action = np.array([0.3, -0.7]) if act_conv.classes == 0 else 1
        assert np.array_equal(act_back(action), act_conv(action))


# ----------------------------------------------------------------------------- pools


def test_inline_pool_resets_after_is_last():
    factories = [functools.partial(cartpole, 3, 0), functools.partial(cartpole, 4, 1)]
    with EnvPool(factories, workers="inline") as pool:
        assert pool.obs_space == {"vector": Space("float32", (4,))}
        actions = np.zeros(2, np.int64)
        out = [pool.step(actions) for _ in range(7)]
    first = np.array([o["is_first"] for o in out])
    last = np.array([o["is_last"] for o in out])
    assert out[0]["vector"].shape == (2, 4)
    # env 0: reset, 3 steps (the third is_last), reset, ...; env 1 the same with 4 steps.
    assert first[:, 0].tolist() == [True, False, False, False, True, False, False]
    assert last[:, 0].tolist() == [False, False, False, True, False, False, False]
    assert first[:, 1].tolist() == [True, False, False, False, False, True, False]
    assert last[:, 1].tolist() == [False, False, False, False, True, False, False]
    assert out[4]["reward"][0] == 0.0  # a reset step carries no reward


def run_pool(workers: str, steps: int) -> list[dict[str, np.ndarray]]:
    config = build_config(overrides={"task": "CartPole-v1"})
    factories = [functools.partial(make_env, config, env_seed(0, TRAIN_STREAM, i)) for i in range(2)]
    with EnvPool(factories, workers=workers) as pool:
        assert pool.parallel == (workers == "process")
        # env 0 always pushes right (short episodes, so resets happen); env 1 alternates.
        return [pool.step(np.array([1, t % 2])) for t in range(steps)]


def test_process_pool_matches_inline_pool():
    inline = run_pool("inline", 30)
    process = run_pool("process", 30)
    assert any(o["is_last"][0] for o in inline)  # the comparison covers a reset
    for a, b in zip(inline, process, strict=True):
        assert set(a) == set(b)
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert np.array_equal(a[key], b[key]), key
    # The two envs got different seeds.
    assert not np.array_equal(inline[0]["vector"][0], inline[0]["vector"][1])


def test_pool_rejects_unknown_worker_kind():
    with pytest.raises(ValueError, match="threads"):
        EnvPool([cartpole], workers="threads")


# ----------------------------------------------------------------------------- seeds, make_env


def test_env_seed_streams_are_disjoint():
    train = {env_seed(0, TRAIN_STREAM, i) for i in range(2000)}
    evals = {env_seed(0, EVAL_STREAM, i) for i in range(2000)}
    test = {env_seed(0, TEST_STREAM, i) for i in range(2000)}
    assert len(train) == len(evals) == len(test) == 2000
    assert not train & evals and not train & test and not evals & test
    assert all(0 <= s < 2**31 for s in train | evals | test)
    assert env_seed(0, TRAIN_STREAM, 5) == env_seed(0, TRAIN_STREAM, 5)
    assert env_seed(0, TRAIN_STREAM, 5) != env_seed(1, TRAIN_STREAM, 5)


def test_make_env_builds_a_gym_env():
    env = make_env(build_config(overrides={"task": "Pendulum-v1"}), seed=1)
    assert env.act_space == Space("float32", (1,))
    assert env.obs_space == {"vector": Space("float32", (3,))}
    env.close()


def test_make_env_unknown_id_names_it():
    with pytest.raises(ConfigError, match="NoSuchEnv-v9"):
        make_env(Config(task="NoSuchEnv-v9"), seed=0)
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        make_env(Config(task="no_such_module_xyz:Env-v0"), seed=0)
    with pytest.raises(ConfigError, match="walker_fly"):
        make_env(Config(task="dmc:walker_fly"), seed=0)
    with pytest.raises(ConfigError, match="task"):
        make_env(Config(), seed=0)


def test_step_async_then_wait_equals_step():
    """The split call the train loop overlaps with training gives the same steps."""
    import functools as ft

    from dreamrl.envs import GymEnv

    def factory(seed):
        return GymEnv(gymnasium.make("CartPole-v1"), (64, 64), seed=seed)

    a = EnvPool([ft.partial(factory, 1), ft.partial(factory, 2)], "inline")
    b = EnvPool([ft.partial(factory, 1), ft.partial(factory, 2)], "inline")
    actions = np.array([0, 1])
    for _ in range(30):
        one = a.step(actions)
        b.step_async(actions)
        two = b.step_wait()
        for key in one:
            np.testing.assert_array_equal(one[key], two[key])
    b.step_async(actions)
    with pytest.raises(RuntimeError, match="twice"):
        b.step_async(actions)
    b.step_wait()
    with pytest.raises(RuntimeError, match="without step_async"):
        b.step_wait()
    a.close()
    b.close()
