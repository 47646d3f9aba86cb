"""`dreamrl bench --world-models`: every world model timed in one run, side by side."""

from __future__ import annotations

import numpy as np

from dreamrl.agent import Agent
from dreamrl.cli import main
from dreamrl.config import build_config
from dreamrl.run.bench import compare_world_models, describe_comparison, imagination_seconds, random_batch
from dreamrl.spaces import Space, replay_spaces


def test_a_world_model_is_timed_under_its_preset_with_its_imagination():
    config = build_config(["debug"], {"task": "CartPole-v1", "run.envs": 1})
    (result,) = compare_world_models(config, ["pixel"], train_steps=1, warmup=0, env_steps=10)
    assert result["world_model"] == "pixel" and result["presets"][-1] == "wm_pixel"
    # wm_pixel imagines from the last 4 steps of each sequence only.
    assert result["imagine_starts"] == config.batch_size * 4
    assert result["imagine_step_ms"] > 0 and result["train_step_s"] > 0
    assert describe_comparison([result]).splitlines()[1].startswith("pixel")


def test_imagination_is_timed_from_as_many_starts_as_an_update_has():
    config = build_config(["debug"], {"task": "test", "compute.device": "cpu"})
    agent = Agent(config, {"vector": Space("float32", (3,))}, Space("int32", (), 2))
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    data = random_batch(spaces, config.batch_size, config.batch_length, np.random.default_rng(0))
    seconds, starts = imagination_seconds(agent, data, repeats=1)
    assert seconds > 0 and starts == config.batch_size * config.batch_length


def test_describe_comparison_gives_each_step_against_the_first():
    rows = [
        {
            "world_model": "rssm",
            "train_step_s": 2.0,
            "imagine_step_ms": 1.0,
            "imagine_starts": 8,
            "params": 10,
        },
        {
            "world_model": "decoderfree",
            "train_step_s": 1.5,
            "imagine_step_ms": 1.0,
            "imagine_starts": 8,
            "params": 9,
        },
    ]
    assert "0.75x" in describe_comparison(rows).splitlines()[2]


def test_an_unknown_world_model_is_refused_by_name(capsys):
    code = main(["bench", "--env", "CartPole-v1", "--preset", "debug", "--world-models", "rssm,muzero"])
    assert code == 2
    assert "muzero" in capsys.readouterr().err


def test_sizes_time_every_world_model_at_each_size_in_one_run(monkeypatch, capsys):
    import dreamrl.run.bench as bench_module

    timed = []

    def fake_compare(config, names, **kwargs):
        timed.append((config.agent.dyn.rssm.deter, config.run.eval_every, tuple(names)))
        return [
            {
                "world_model": n,
                "train_step_s": 1.0 + i,
                "imagine_step_ms": 1.0,
                "imagine_starts": 4,
                "params": 1,
            }
            for i, n in enumerate(names)
        ]

    monkeypatch.setattr(bench_module, "compare_world_models", fake_compare)
    monkeypatch.setattr(bench_module, "describe", lambda result: "")
    args = ["bench", "--env", "CartPole-v1", "--sizes", "size1m,size12m", "--world-models", "rssm,pixel"]
    assert main([*args, "run.eval_every=77"]) == 0
    # Each size preset is applied, in order, and the overrides still win over it.
    assert timed == [(512, 77, ("rssm", "pixel")), (2048, 77, ("rssm", "pixel"))]
    out = capsys.readouterr().out
    assert out.index("At size1m:") < out.index("At size12m:")
    assert "2.00x" in out.split("At size12m:")[1]


def test_sizes_are_refused_by_name_and_beside_a_size_preset(capsys):
    base = ["bench", "--env", "CartPole-v1", "--world-models", "rssm"]
    assert main([*base, "--sizes", "size1m,size3m"]) == 2
    assert "size3m" in capsys.readouterr().err
    assert main([*base, "--sizes", "size1m", "--preset", "size12m"]) == 2
    assert "--sizes chooses the model size" in capsys.readouterr().err


def test_sizes_without_world_models_time_the_configured_agent_at_each_size(monkeypatch, capsys):
    import json

    import dreamrl.run.bench as bench_module

    monkeypatch.setattr(
        bench_module,
        "bench",
        lambda config, **kwargs: {"deter": config.agent.dyn.rssm.deter, "wm": config.agent.wm},
    )
    monkeypatch.setattr(bench_module, "describe", lambda result: f"deter {result['deter']}")
    assert (
        main(["bench", "--env", "CartPole-v1", "--sizes", "size12m,size1m", "--json", "agent.wm=pixel"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["At size12m:", "deter 2048", "At size1m:", "deter 512"]
    assert json.loads(lines[-1]) == {
        "size12m": {"deter": 2048, "wm": "pixel"},
        "size1m": {"deter": 512, "wm": "pixel"},
    }
