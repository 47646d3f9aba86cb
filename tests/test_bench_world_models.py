"""`dreamrl bench --world-models`: every world model timed in one run, side by side."""

from __future__ import annotations

from dreamrl.cli import main
from dreamrl.config import build_config
from dreamrl.run.bench import compare_world_models, describe_comparison


def test_each_world_model_is_timed_under_its_preset_with_its_imagination():
    config = build_config(["debug"], {"task": "CartPole-v1", "run.envs": 1})
    results = compare_world_models(config, ["rssm", "pixel"], train_steps=1, warmup=0, env_steps=10)
    assert [r["world_model"] for r in results] == ["rssm", "pixel"]
    assert results[1]["presets"][-1] == "wm_pixel"
    # wm_pixel imagines from the last 4 steps of each sequence only.
    assert results[0]["imagine_starts"] == config.batch_size * config.batch_length
    assert results[1]["imagine_starts"] == config.batch_size * 4
    assert all(r["imagine_step_ms"] > 0 and r["train_step_s"] > 0 for r in results)
    table = describe_comparison(results)
    assert table.splitlines()[1].startswith("rssm") and "1.00x" in table.splitlines()[1]
    assert table.splitlines()[2].startswith("pixel")


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
