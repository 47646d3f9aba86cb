"""Observation keys: what dreamrl reads of an env's observation space, what it leaves
out (and says so, once), and which keys the encoder and decoder see.

A minigrid-style observation (an object grid, a direction, a text mission) trains with
the mission left out; multi-discrete parts read as one-hot vectors end to end, tuples
flatten into numbered keys; an env with nothing readable, or an action space dreamrl
cannot act in, is a config error (exit status 2 from the CLI, no traceback);
``agent.enc.spaces`` / ``agent.dec.spaces`` choose the encoder's inputs and the
decoder's reconstructions.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces as gs

from dreamrl.agent import Agent
from dreamrl.cli import main
from dreamrl.config import ConfigError, build_config
from dreamrl.envs import ActionConverter, GymEnv, ObsConverter, make_env
from dreamrl.envs.check import check_env
from dreamrl.envs.pool import EnvPool
from dreamrl.run.bench import random_batch as replay_shaped
from dreamrl.run.train import train
from dreamrl.spaces import Space, replay_spaces

import fixtures.keyed_envs  # noqa: F401 - registers the envs

ROOT = Path(__file__).resolve().parents[1]
GRID = "fixtures.keyed_envs:GridWithMission-v0"
TEXT_ONLY = "fixtures.keyed_envs:TextOnly-v0"
MULTI_ACTION = "fixtures.keyed_envs:MultiAction-v0"


def config(**overrides):
    return build_config(["debug"], {"task": GRID, "compute.device": "cpu", **overrides})


def mission_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "mission" in line]


# ----------------------------------------------------------------------------- minigrid-style


def grid_env(config, seed, mode="train"):
    env = gymnasium.make("GridWithMission-v0")
    return GymEnv(env, config.env.size, repeat=config.env.repeat, seed=seed)


def test_grid_with_a_text_mission_trains_with_the_mission_left_out_in_one_line(tmp_path, capsys):
    small = {"env.size": (48, 48), "run.train_ratio": 8}  # a dozen updates: keeps the test short
    cfg = config(**{"run.steps": 300, "run.eval_every": 0, "run.eval_eps": 0, **small})
    out = io.StringIO()
    result = train(cfg, tmp_path, make_env=grid_env, out=out, progress=False)
    assert result.updates > 0
    agent = result.agent
    assert set(agent.obs_space) == {"image", "direction"}
    assert agent.obs_space["direction"] == Space("float32", (4,))
    assert set(agent.wm.decoder.spaces) == {"image", "direction"}
    lines = mission_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0] == (
        "warning: observation key 'mission' (Text) left out: it is text; the model reads images and vectors"
    )
    assert "left out" not in out.getvalue()  # said once, on stderr
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    logged = {k for m in metrics for k in m}
    assert {"loss/image", "loss/direction"} <= logged, sorted(logged)
    assert not any("mission" in k for k in logged)


def test_a_process_pool_says_it_once_not_once_per_env(capfd):
    factories = [functools.partial(make_env, config(), seed) for seed in (1, 2)]
    with EnvPool(factories, "process", timeout=120) as pool:
        assert set(pool.obs_space) == {"image", "direction"}
        step = pool.step(np.zeros(2, np.int32))
        assert step["direction"].shape == (2, 4)
    assert len(mission_lines(capfd.readouterr().err)) == 1


def test_check_env_shows_the_key_left_out():
    cfg = config()
    env = make_env(cfg, 0)
    try:
        report = check_env(cfg, env, steps=40)
    finally:
        env.close()
    assert report.ok, report.errors
    assert report.notes == [
        "observation key 'mission' (Text) left out: it is text; the model reads images and vectors"
    ]
    assert len(mission_lines(report.text())) == 1
    assert report.as_dict()["notes"] == report.notes


def test_a_text_space_of_the_envs_own_is_left_out_as_text():
    class MissionSpace(gs.Space):  # minigrid's: a plain Space subclass whose samples are strings
        def sample(self, mask=None, probability=None):
            return "pick up the key"

    conv = ObsConverter.from_gym(gs.Dict({"pos": gs.Discrete(2), "mission": MissionSpace()}), (64, 64))
    assert conv.spaces == {"pos": Space("float32", (2,))}
    assert conv.notes == (
        "observation key 'mission' (MissionSpace) left out: it is text; the model reads images and vectors",
    )


# ----------------------------------------------------------------------------- spaces read


def test_multidiscrete_reads_as_its_parts_one_hot_end_to_end():
    conv = ObsConverter.from_gym(gs.MultiDiscrete([3, 2, 4]), (64, 64))
    assert conv.spaces == {"vector": Space("float32", (9,))}
    assert conv(np.array([2, 0, 3]))["vector"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 1]
    assert conv(np.array([0, 1, 0]))["vector"].tolist() == [1, 0, 0, 0, 1, 1, 0, 0, 0]


def test_multidiscrete_parts_count_from_their_start_and_nested_nvec_flattens():
    shifted = ObsConverter.from_gym(gs.MultiDiscrete([3, 2], start=[1, -1]), (64, 64))
    assert shifted(np.array([1, 0]))["vector"].tolist() == [1, 0, 0, 0, 1]
    assert shifted(np.array([3, -1]))["vector"].tolist() == [0, 0, 1, 1, 0]
    grid = ObsConverter.from_gym(gs.MultiDiscrete(np.array([[2, 3], [2, 2]])), (64, 64))
    assert grid.spaces == {"vector": Space("float32", (9,))}
    assert grid(np.array([[1, 2], [0, 1]]))["vector"].tolist() == [0, 1, 0, 0, 1, 1, 0, 0, 1]
    with pytest.raises(ValueError, match=r"vector\[1\]: 1 is outside its space's values -1..0"):
        shifted(np.array([1, 1]))


def test_tuples_flatten_into_numbered_keys_recursively():
    space = gs.Dict(
        {
            "arm": gs.Tuple(
                (
                    gs.Box(-1, 1, (2,), np.float32),
                    gs.Discrete(3),
                    gs.Tuple((gs.MultiBinary(2), gs.Box(0, 255, (8, 8, 3), np.uint8))),
                )
            ),
            "speed": gs.Box(-5, 5, (1,), np.float32),
        }
    )
    conv = ObsConverter.from_gym(space, (16, 16))
    assert conv.spaces == {
        "arm_0": Space("float32", (2,)),
        "arm_1": Space("float32", (3,)),
        "arm_2_0": Space("float32", (2,)),
        "arm_2_1": Space("uint8", (16, 16, 3)),
        "speed": Space("float32", (1,)),
    }
    raw = {
        "arm": (
            np.array([0.5, -0.25], np.float32),
            2,
            (np.array([1, 0], np.int8), np.zeros((8, 8, 3), np.uint8)),
        ),
        "speed": np.array([3.0], np.float32),
    }
    out = conv(raw)
    assert out["arm_0"].tolist() == [0.5, -0.25]
    assert out["arm_1"].tolist() == [0, 0, 1]
    assert out["arm_2_0"].tolist() == [1, 0]
    assert out["arm_2_1"].shape == (16, 16, 3)
    assert out["speed"].tolist() == [3.0]
    top = ObsConverter.from_gym(gs.Tuple((gs.Discrete(2), gs.Box(0, 1, (1,), np.float32))), (64, 64))
    assert top.spaces == {"obs_0": Space("float32", (2,)), "obs_1": Space("float32", (1,))}
    assert {k: v.tolist() for k, v in top((1, np.array([0.5], np.float32))).items()} == {
        "obs_0": [0, 1],
        "obs_1": [0.5],
    }


def test_parts_the_model_cannot_read_are_left_out_one_line_each():
    space = gs.Dict(
        {
            "pos": gs.Box(-1, 1, (2,), np.float32),
            "note": gs.Text(8),
            "links": gs.Graph(gs.Box(0, 1, (2,)), gs.Discrete(2)),
            "trail": gs.Sequence(gs.Discrete(3)),
            "nothing": gs.Box(0, 1, (0,), np.float32),
        }
    )
    conv = ObsConverter.from_gym(space, (64, 64))
    assert conv.spaces == {"pos": Space("float32", (2,))}
    assert conv.notes == (  # in the Dict's (sorted) key order
        "observation key 'links' (Graph) left out: it is a graph; the model reads images and vectors",
        "observation key 'note' (Text) left out: it is text; the model reads images and vectors",
        "observation key 'nothing' (Box) left out: it holds no values (shape (0,))",
        "observation key 'trail' (Sequence) left out: it is a sequence of varying length; "
        "the model reads images and vectors",
    )
    assert conv(space.sample())["pos"].shape == (2,)


def test_keys_that_name_step_fields_are_renamed_with_a_note():
    conv = ObsConverter.from_gym(gs.Dict({"reward": gs.Box(0, 1, (1,)), "x": gs.Discrete(2)}), (64, 64))
    assert set(conv.spaces) == {"obs_reward", "x"}
    assert conv.notes == (
        "observation key 'reward' is read as 'obs_reward': 'reward' names a step field or loss term",
    )


def test_converter_json_round_trips_the_new_kinds_and_old_json_still_loads():
    space = gs.Dict(
        {
            "md": gs.MultiDiscrete([3, 2], start=[1, 0]),
            "tup": gs.Tuple((gs.Discrete(2), gs.Box(-1, 1, (2,), np.float32))),
            "mission": gs.Text(8),
        }
    )
    conv = ObsConverter.from_gym(space, (64, 64))
    back = ObsConverter.from_json(json.loads(json.dumps(conv.to_json())))
    assert back.to_json() == conv.to_json()
    assert back.spaces == conv.spaces and back.notes == conv.notes
    raw = space.sample()
    for key, value in conv(raw).items():
        assert np.array_equal(back(raw)[key], value), key
    old = json.loads((ROOT / "tests" / "fixtures" / "checkpoint_v1" / "agent.json").read_text())[
        "obs_converter"
    ]
    assert "parts" not in json.dumps(old) and "notes" not in old
    loaded = ObsConverter.from_json(old)
    assert loaded.spaces == {"vector": Space("float32", (4,))} and loaded.notes == ()
    assert loaded.to_json() == old  # the old kinds write what they always wrote


# ----------------------------------------------------------------------------- errors


def test_nothing_readable_is_a_config_error_naming_the_space_and_what_was_left_out():
    with pytest.raises(ConfigError, match=r"observation space Text\(.*nothing in it is readable.*it is text"):
        ObsConverter.from_gym(gs.Text(8), (64, 64))
    with pytest.raises(ConfigError) as caught:
        make_env(config(task=TEXT_ONLY), 0)
    assert str(caught.value) == (
        f"env TextOnly-v0: observation space {gs.Text(16)}: nothing in it is readable by dreamrl "
        "(the observation (Text) left out: it is text; the model reads images and vectors)"
    )


def test_train_on_an_env_with_nothing_readable_exits_2_without_a_traceback(tmp_path, capsys):
    argv = ["train", "--env", TEXT_ONLY, "--logdir", str(tmp_path / "run"), "--preset", "debug"]
    assert main([*argv, "compute.device=cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "env TextOnly-v0" in line and "nothing in it is readable" in line and "text" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("space", [gs.MultiDiscrete([3, 2]), gs.Tuple((gs.Discrete(2), gs.Discrete(2)))])
def test_an_action_space_dreamrl_cannot_act_in_is_a_config_error_naming_it(space):
    with pytest.raises(ConfigError, match=rf"action space {type(space).__name__}\(.*Discrete and Box"):
        ActionConverter.from_gym(space)


def test_check_env_on_an_unsupported_action_space_exits_2_without_a_traceback(capsys):
    assert main(["check-env", MULTI_ACTION, "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: env MultiAction-v0: action space MultiDiscrete([3 2]) is not supported")


# ----------------------------------------------------------------------------- enc / dec spaces

OBS = {
    "image": Space("uint8", (64, 64, 3)),
    "direction": Space("float32", (4,)),
    "extra": Space("float32", (3,)),
}


def make_agent(**overrides):
    cfg = build_config(["debug"], {"task": "test", "compute.device": "cpu", **overrides})
    return Agent(cfg, OBS, Space("int32", (), 3))


def random_batch(agent, seed=0):
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    B, T = agent.config.batch_size, agent.config.batch_length
    return replay_shaped(spaces, B, T, np.random.default_rng(seed))


def test_enc_and_dec_spaces_choose_what_the_encoder_reads_and_the_decoder_rebuilds():
    agent = make_agent(**{"agent.enc.spaces": "image|direction", "agent.dec.spaces": "dir.*"})
    assert set(agent.wm.encoder.spaces) == {"image", "direction"}
    assert agent.wm.encoder.vector_keys == ["direction"] and agent.wm.encoder.image_keys == ["image"]
    assert set(agent.wm.decoder.spaces) == {"direction"} and not agent.wm.decoder.image_keys
    batch = agent.to_batch(random_batch(agent))
    with torch.no_grad():
        losses, _, _ = agent.losses(batch)
    assert {"direction", "rew", "con", "dyn", "rep"} <= set(losses)
    assert not {"image", "extra"} & set(losses)
    assert set(agent.scales) == set(losses)
    assert not agent.train_step(random_batch(agent, 1)).nonfinite
    # What the encoder does not read does not change the embedding.
    data = random_batch(agent, 2)
    obs = {k: torch.as_tensor(data[k][:, 0]) for k in OBS}
    with torch.no_grad():
        before = agent.wm.encoder(obs)
        after = agent.wm.encoder({**obs, "extra": obs["extra"] + 100})
    assert torch.equal(before, after)


def test_default_spaces_read_and_rebuild_every_key():
    agent = make_agent()
    assert set(agent.wm.encoder.spaces) == set(agent.wm.decoder.spaces) == set(OBS)
    assert {k for k in agent.scales if k in OBS} == set(OBS)


@pytest.mark.parametrize(
    "setting, pattern, message",
    [
        ("agent.enc.spaces", "(image", r"agent\.enc\.spaces: '\(image' is not a regular expression"),
        ("agent.dec.spaces", "[", r"agent\.dec\.spaces: '\[' is not a regular expression"),
        (
            "agent.enc.spaces",
            "imag",  # matched in full, not as a prefix
            r"agent\.enc\.spaces: 'imag' matches none of the observation keys \(image, direction, extra\)",
        ),
        ("agent.dec.spaces", "mission", r"agent\.dec\.spaces: 'mission' matches none"),
    ],
)
def test_a_bad_or_empty_selection_is_a_config_error_naming_the_setting(setting, pattern, message):
    with pytest.raises(ConfigError, match=message):
        make_agent(**{setting: pattern})


def test_a_selection_matching_nothing_exits_2_from_train(tmp_path, capsys):
    argv = ["train", "--env", GRID, "--logdir", str(tmp_path / "run"), "--preset", "debug", "--no-progress"]
    assert main([*argv, "compute.device=cpu", "agent.enc.spaces=mission"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: agent.enc.spaces: 'mission' matches none of the observation keys (direction, image)" in err


def test_diagnostics_and_whatif_look_only_at_the_keys_the_decoder_rebuilds(tmp_path):
    """With the image left out of the decoder, the open-loop picture falls back to the
    decoded vector instead of asking the decoder for an image it never rebuilds."""
    from dreamrl.cli import main
    from dreamrl.diagnostics.hook import training_hooks

    small = {"env.size": (48, 48), "run.train_ratio": 8, "agent.dec.spaces": "direction"}
    cfg = config(**{"run.steps": 200, "run.eval_every": 200, "run.eval_eps": 1, **small})
    train(cfg, tmp_path, make_env=grid_env, hooks=training_hooks(cfg, tmp_path), out=io.StringIO())
    assert list((tmp_path / "diagnostics").glob("openloop-*.png"))
    assert main(["whatif", "--logdir", str(tmp_path), "--horizon", "3"]) == 0
    assert list((tmp_path / "whatif").glob("whatif-*.png"))
