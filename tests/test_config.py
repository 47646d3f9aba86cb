"""The config tree: presets, overrides, type coercion, validation and warnings."""

from __future__ import annotations

import json
import re

import pytest

from dreamrl.config import (
    Config,
    ConfigError,
    build_config,
    diff,
    from_dict,
    parse_overrides,
    to_dict,
    validate,
    warnings_for,
)
from dreamrl.config_tree import coerce, leaf_paths, replace
from dreamrl.presets import SIZES

AGENT_UNITS = {
    "agent.enc.simple.units",
    "agent.dec.simple.units",
    "agent.rewhead.units",
    "agent.conhead.units",
    "agent.policy.units",
    "agent.value.units",
    "agent.pixel.units",
}


def test_defaults_are_the_paper_values_and_valid():
    cfg = Config()
    assert cfg.agent.dyn.rssm.deter == 8192 and cfg.agent.dyn.rssm.blocks == 8
    assert cfg.agent.loss_scales.rep == 0.1 and cfg.agent.imag_length == 15
    assert validate(cfg) is cfg


def test_presets_compose_left_to_right():
    cfg = build_config(["size1m"])
    assert cfg.agent.dyn.rssm.deter == 512 and cfg.agent.dyn.rssm.hidden == 64
    assert cfg.presets == ("size1m",)
    # An override after the preset wins; the preset's other keys stay.
    cfg = build_config(["size1m"], {"agent.dyn.rssm.deter": 1024})
    assert cfg.agent.dyn.rssm.deter == 1024
    assert cfg.agent.dyn.rssm.hidden == 64 and cfg.agent.dyn.rssm.classes == 4
    # The later preset wins over the earlier one.
    cfg = build_config(["size1m", "size12m"])
    assert cfg.agent.dyn.rssm.deter == 2048 and cfg.agent.policy.units == 256
    assert cfg.presets == ("size1m", "size12m")
    cfg = build_config(["size12m", "size1m"])
    assert cfg.agent.dyn.rssm.deter == 512 and cfg.agent.policy.units == 64
    # debug then dmc_proprio: dmc_proprio's size1m keys overwrite debug's deter.
    cfg = build_config(["debug", "dmc_proprio"])
    assert cfg.agent.dyn.rssm.deter == 512 and cfg.batch_size == 8 and cfg.run.train_ratio == 1024


def test_regex_preset_keys_set_every_matching_field():
    cfg = build_config(["size1m"])
    units = {p for p in leaf_paths(Config) if re.fullmatch(r"agent\..*\.units", p)}
    assert units == AGENT_UNITS
    for path in AGENT_UNITS:
        section, *rest = path.split(".")[1:]
        value = getattr(cfg.agent, section)
        for part in rest:
            value = getattr(value, part)
        assert value == 64, path
    assert cfg.agent.enc.simple.depth == 4 and cfg.agent.dec.simple.depth == 4
    # A regex override on the command line works the same way.
    cfg = replace(Config(), {r"agent\..*\.layers": "2"})
    assert (cfg.agent.enc.simple.layers, cfg.agent.policy.layers, cfg.agent.rewhead.layers) == (2, 2, 2)
    assert cfg.agent.value.layers == 2 and cfg.agent.conhead.layers == 2


def test_regex_matching_nothing_is_an_error():
    with pytest.raises(ConfigError, match=re.escape(r"agent\..*\.nothing")):
        replace(Config(), {r"agent\..*\.nothing": 1})


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"agent\.foo"):
        build_config(overrides={"agent.foo": 1})
    with pytest.raises(ConfigError, match=r"run\.envz") as err:
        build_config(overrides=parse_overrides(["run.envz=2"]))
    assert "unknown" in str(err.value)


def test_unknown_preset_is_an_error():
    with pytest.raises(ConfigError, match="nosuchpreset"):
        build_config(["nosuchpreset"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError) as err:
        build_config(overrides=parse_overrides(["run.envs=abc"]))
    assert "run.envs" in str(err.value) and "integer" in str(err.value) and "abc" in str(err.value)
    with pytest.raises(ConfigError, match=r"run\.train_ratio.*number"):
        build_config(overrides={"run.train_ratio": "fast"})
    with pytest.raises(ConfigError, match=r"agent\.contdisc.*boolean"):
        build_config(overrides={"agent.contdisc": "maybe"})
    with pytest.raises(ConfigError, match=r"run\.envs.*integer"):
        build_config(overrides={"run.envs": "2.5"})


def test_out_of_range_values():
    with pytest.raises(ConfigError, match=r"agent\.dyn\.rssm\.deter") as err:
        build_config(overrides={"agent.dyn.rssm.deter": 100})  # blocks=8
    assert "blocks" in str(err.value)
    with pytest.raises(ConfigError, match=r"run\.train_ratio"):
        build_config(overrides={"run.train_ratio": -1})
    with pytest.raises(ConfigError, match=r"agent\.dyn\.rssm\.unimix"):
        build_config(overrides={"agent.dyn.rssm.unimix": 1.0})
    with pytest.raises(ConfigError, match=r"batch_size"):
        build_config(overrides={"batch_size": 0})
    with pytest.raises(ConfigError, match=r"env\.size"):
        build_config(overrides={"env.size": "50,64"})
    with pytest.raises(ConfigError, match=r"run\.env_workers"):
        build_config(overrides={"run.env_workers": "threads"})


def test_to_dict_from_dict_round_trip():
    cfg = build_config(["debug"], {"env.size": "[48,64]", "agent.imag_loss.lam": 0.9, "task": "CartPole-v1"})
    data = json.loads(json.dumps(to_dict(cfg)))
    assert data["env"]["size"] == [48, 64]  # tuples become lists in JSON
    back = from_dict(data)
    assert back == cfg
    assert back.env.size == (48, 64) and back.presets == ("debug",)
    assert diff(cfg, back) == {}


def test_from_dict_rejects_unknown_and_bad_values():
    data = to_dict(Config())
    data["agent"]["dyn"]["rssm"]["bogus"] = 1
    with pytest.raises(ConfigError, match=r"agent\.dyn\.rssm\.bogus"):
        from_dict(data)
    data = to_dict(Config())
    data["run"]["envs"] = "many"
    with pytest.raises(ConfigError, match=r"run\.envs"):
        from_dict(data)


def test_diff_lists_changed_leaves():
    old = Config()
    new = build_config(overrides={"run.envs": 8, "agent.opt.lr": "1e-4"}, size=None)
    assert diff(old, new) == {"run.envs": (4, 8), "agent.opt.lr": (4e-5, 1e-4)}
    assert diff(old, old) == {}


def test_scientific_notation_for_int_field():
    cfg = build_config(overrides=parse_overrides(["run.steps=1e6"]))
    assert cfg.run.steps == 1_000_000 and type(cfg.run.steps) is int
    assert coerce("replay.size", int, "2.5e3") == 2500
    with pytest.raises(ConfigError):
        coerce("replay.size", int, "1.5")
    with pytest.raises(ConfigError):
        coerce("replay.size", int, True)  # a bool is not an int here


@pytest.mark.parametrize("text", ["true", "True", "yes", "1", "on"])
def test_bool_parsing_true(text):
    assert Config().agent.ac_grads is False
    assert replace(Config(), {"agent.ac_grads": text}).agent.ac_grads is True


@pytest.mark.parametrize("text", ["false", "FALSE", "no", "0", "off"])
def test_bool_parsing_false(text):
    assert replace(Config(), {"agent.contdisc": text}).agent.contdisc is False


def test_tuple_parsing():
    assert replace(Config(), {"agent.enc.simple.mults": "[2,3]"}).agent.enc.simple.mults == (2, 3)
    assert replace(Config(), {"agent.enc.simple.mults": "2,3"}).agent.enc.simple.mults == (2, 3)
    assert replace(Config(), {"agent.enc.simple.mults": "(2, 3, 5)"}).agent.enc.simple.mults == (2, 3, 5)
    assert replace(Config(), {"agent.enc.simple.mults": [4]}).agent.enc.simple.mults == (4,)
    with pytest.raises(ConfigError, match=r"agent\.enc\.simple\.mults"):
        replace(Config(), {"agent.enc.simple.mults": "2,x"})
    # Mismatched encoder and decoder stages fail validation.
    with pytest.raises(ConfigError, match=r"agent\.dec\.simple\.mults"):
        build_config(overrides={"agent.enc.simple.mults": "2,3"})


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "--c=x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])
    with pytest.raises(ConfigError):
        parse_overrides(["=3"])


def test_warnings_for():
    assert warnings_for(Config()) == []
    long = warnings_for(build_config(overrides={"agent.imag_length": 100}))
    assert len(long) == 1 and "agent.imag_length=100" in long[0]
    strong = warnings_for(build_config(overrides={"agent.loss_scales.rep": 2.0}))
    assert len(strong) == 1 and "rep/dyn = 2" in strong[0]
    weak = warnings_for(build_config(overrides={"agent.loss_scales.rep": 0.001}))
    assert len(weak) == 1 and "rep/dyn = 0.001" in weak[0]
    zero = warnings_for(build_config(overrides={"agent.loss_scales.dyn": 0}))
    assert len(zero) == 1 and "zero term" in zero[0]
    short = warnings_for(build_config(overrides={"batch_length": 8}))
    assert len(short) == 1 and "batch_length=8" in short[0]


@pytest.mark.parametrize(("key", "settings"), [("compile", (True, False)), ("codec_chunk", (0, 32))])
def test_a_run_dir_from_before_a_speed_setting_resumes_with_any_value(tmp_path, key, settings):
    """A config.json written before ``compute.compile`` or ``compute.codec_chunk`` existed lacks the
    key; resuming it with any value changes nothing that is learned and is not refused."""
    from dreamrl.config import to_dict
    from dreamrl.run.resume import check_config
    from dreamrl.rundir import RunDir

    saved = to_dict(build_config(["debug"], {"task": "CartPole-v1"}))
    del saved["compute"][key]
    RunDir(tmp_path).config.write_text(json.dumps(saved))
    for setting in settings:
        config = build_config(["debug"], {"task": "CartPole-v1", f"compute.{key}": setting})
        assert check_config(tmp_path, config) is not None
    with pytest.raises(ConfigError, match="batch_size"):
        check_config(tmp_path, build_config(["debug"], {"task": "CartPole-v1", "batch_size": 4}))


def test_a_saved_config_with_keys_from_before_the_compute_section_is_read_under_the_new_keys():
    saved = to_dict(build_config(["debug"], {"task": "CartPole-v1", "compute.precision": "bfloat16"}))
    compute = saved.pop("compute")
    saved["device"] = "cpu"
    saved["run"].update(
        precision=compute["precision"], compile=True, codec_chunk=8, threads=3
    )  # as a config.json of an older dreamrl spells them
    config = from_dict(saved)
    assert config.compute.device == "cpu" and config.compute.precision == "bfloat16"
    assert config.compute.compile is True and config.compute.codec_chunk == 8 and config.compute.threads == 3


@pytest.mark.parametrize("old", ["device", "run.precision", "run.compile", "run.codec_chunk", "run.threads"])
def test_an_override_with_a_key_that_moved_names_its_new_key(old):
    with pytest.raises(ConfigError, match=rf"{re.escape(old)}: this key is now compute\."):
        build_config(["debug"], {"task": "x", old: "1"})


def test_with_no_size_named_the_config_takes_the_hardwares_size():
    """On a CPU (this suite's machines) a config built with no size preset is size1m, and
    says so in its presets; a named size, a preset that sets one, or size=None wins."""
    import torch

    expected = "size200m" if torch.cuda.is_available() else "size1m"
    auto = build_config(["quick"], {"task": "x"})
    assert auto.presets == (expected, "quick")
    assert auto.agent.dyn.rssm.deter == SIZES[expected]["agent.dyn.rssm.deter"]
    assert build_config(["size12m"], {"task": "x"}).presets == ("size12m",)
    assert build_config(["debug"], {"task": "x"}).presets == ("debug",)
    assert build_config([], {"task": "x", "agent.dyn.rssm.deter": 256}).presets == ()
    assert build_config([], {"task": "x"}, size=None).agent.dyn.rssm.deter == 8192
    assert build_config([], {"task": "x", "compute.device": "cpu"}).presets == ("size1m",)


def test_a_baseline_too_short_for_its_settings_is_warned_of():
    """SB3's defaults at a 2,500-step run: PPO's 2,048-step rollout learns once, DQN's target
    network (every 10,000 steps) is never updated; Dreamer's knobs are not a baseline's."""
    ppo = warnings_for(build_config(["ppo"], {"run.steps": 2500}))
    assert len(ppo) == 1 and "learns once every 2,048 env steps, so 1 time(s)" in ppo[0]
    assert warnings_for(build_config(["ppo"], {"run.steps": 2500, "agent.baseline.ppo.n_steps": 256})) == []
    dqn = warnings_for(build_config(["dqn"], {"run.steps": 2500}))
    assert len(dqn) == 1 and "target network is never updated" in dqn[0]
    short = {"run.steps": 50, "agent.baseline.dqn.target_update_interval": 10}
    late = warnings_for(build_config(["dqn"], short))
    assert len(late) == 1 and "learning_starts=100" in late[0]
    assert warnings_for(build_config(["dqn"], {"run.steps": 20000, "batch_length": 8})) == []
