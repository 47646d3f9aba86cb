"""``dreamrl export``: the ONNX and TorchScript policies act as the library does over
episodes with their state carried, for a vector and a pixel agent; the spec says what
the files take and give; a run dir with no checkpoint, or a planning agent, is refused
with one line; the docs' onnxruntime example runs without torch or dreamrl."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrl.agent import Agent
from dreamrl.cli import main
from dreamrl.config import build_config, to_dict
from dreamrl.envs import make_env
from dreamrl.export import export_policy
from dreamrl.export.check import Recorded, compare, record_env
from dreamrl.export.formats import load
from dreamrl.export.graph import PolicyStep, state_name
from dreamrl.run.checkpoint import save_checkpoint
from dreamrl.rundir import RunDir
from dreamrl.world_models.base import state_from_items, state_items

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60  # steps of each check: several CartPole episodes of an untrained agent


def make_run(run_dir: Path, task: str, *overrides: str) -> Path:
    """A run dir holding one checkpoint of an untrained debug agent for ``task``, its
    weights scaled up so that its actions follow its observations and its state (the
    zero-initialised and 0.01-scaled output layers of a fresh agent barely do)."""
    values = dict(o.split("=", 1) for o in overrides)
    config = build_config(["debug"], {"task": task, "compute.device": "cpu", **values})
    env = make_env(config, 0)
    agent = Agent(config, env.obs_space, env.act_space, "cpu", env.obs_converter, env.act_converter)
    env.close()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in agent.modules.values():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.3)
        if agent.act_space.discrete:
            # Centre the actor's logits on states it meets, so that no action dominates
            # whatever it sees (from pixels, the features barely move the noisy logits).
            states = record_env(agent, 30, seed=0).states
            template = agent.wm.initial(1, "cpu")
            visited = {
                item: torch.as_tensor(np.concatenate([s[state_name(item)] for s in states]))
                for item in state_items(template)
            }
            feat = agent.wm.features(state_from_items(template, visited))
            actor = agent.ac.actor
            actor.out.bias -= actor.out(actor.mlp(feat)).mean(0)
    run_dir.mkdir(parents=True)
    RunDir(run_dir).config.write_text(json.dumps(to_dict(config)))
    save_checkpoint(run_dir, 0, agent, {"env_steps": 0}, keep=1)
    return run_dir


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export") / "vector", "CartPole-v1")


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("export") / "pixel", "CartPole-v1", "env.pixels=true")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", ["vector", "pixel"])
def test_exported_policy_acts_as_the_library_over_episodes(kind, fmt, request, tmp_path):
    run_dir = request.getfixturevalue(f"{kind}_run")
    agent = Agent.load(run_dir)
    out = tmp_path / f"policy.{fmt}"
    exported = export_policy(agent, fmt, out, check_steps=STEPS)
    result = exported.check
    assert result is not None and result.passed, result
    assert result.steps == STEPS and result.episodes >= 2  # is_first reset the state in between
    assert exported.spec["check"]["passed"]

    # The check's own comparison, redone here: the file driven step by step with its
    # state outputs fed back gives the library's actions, and they are not all the same
    # (an agent whose actions ignore its inputs would pass any comparison).
    recorded = record_env(agent, STEPS, seed=3)
    actions = np.concatenate(recorded.actions)
    assert len(np.unique(actions)) > 1
    step = PolicyStep(agent)
    runner = load(fmt, out, [t.name for t in step.inputs], [t.name for t in step.outputs])
    assert compare(recorded, runner, step, fmt).passed

    # The state matters: fed zeros at every step instead, the file acts otherwise.
    zero_state = Recorded(
        [{**o, "is_first": np.array([True])} for o in recorded.obs],
        recorded.actions,
        recorded.env_actions,
        recorded.states,
        "zero state",
    )
    assert compare(zero_state, runner, step, fmt).matching < STEPS


def test_spec_names_every_tensor_and_the_preprocessing(pixel_run, tmp_path):
    exported = export_policy(Agent.load(pixel_run), "onnx", tmp_path / "p.onnx", check_steps=5)
    spec = json.loads(exported.spec_path.read_text())
    assert exported.spec_path == tmp_path / "p.onnx.json" and spec["file"] == "p.onnx"
    inputs = {t["name"]: t for t in spec["inputs"]}
    assert inputs["image"] == {
        "name": "image",
        "dtype": "uint8",
        "shape": ["N", 64, 64, 3],
        "role": "observation",
    }
    assert inputs["is_first"]["dtype"] == "bool"
    state = [t for t in spec["inputs"] if t["role"] == "state"]
    assert {t["name"] for t in state} == {"state_deter", "state_stoch", "state_prev_action"}
    outputs = {t["name"]: t for t in spec["outputs"]}
    assert all(t["next"] in outputs and outputs[t["next"]]["shape"] == t["shape"] for t in state)
    assert inputs["state_deter"]["shape"] == ["N", 64]  # the debug preset's deter
    assert outputs["action"]["dtype"] == "int32" and outputs["env_action"]["shape"] == ["N"]
    assert spec["observation"]["pixels"] and spec["observation"]["size"] == [64, 64]
    assert spec["observation"]["from_env"][0]["kind"] == "render"
    assert spec["action"]["kind"] == "discrete" and spec["action"]["classes"] == 2

    import onnxruntime

    session = onnxruntime.InferenceSession(str(exported.path))
    assert [i.name for i in session.get_inputs()] == [t["name"] for t in spec["inputs"]]
    assert [o.name for o in session.get_outputs()] == [t["name"] for t in spec["outputs"]]


def test_continuous_actions_and_a_batch_of_envs(tmp_path):
    run_dir = make_run(tmp_path / "pendulum", "Pendulum-v1")
    agent = Agent.load(run_dir)
    exported = export_policy(agent, "onnx", tmp_path / "p.onnx", check_steps=20)
    assert exported.check is not None and exported.check.passed
    assert exported.spec["action"]["low"] == [-2.0] and exported.spec["action"]["high"] == [2.0]
    # The batch dimension is free: three envs at once act as three single envs do.
    step = PolicyStep(agent)
    runner = load("onnx", exported.path, [t.name for t in step.inputs], [t.name for t in step.outputs])
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 3)).astype(np.float32)
    state = {t.name: np.zeros((3, *t.dims), t.dtype) for t in step.inputs if t.role == "state"}
    batched = runner({"vector": vectors, "is_first": np.ones(3, bool), **state})
    library, _ = agent.policy({"vector": vectors, "is_first": np.ones(3, bool)}, None, deterministic=True)
    np.testing.assert_allclose(batched["action"], library, atol=1e-5)
    assert batched["env_action"].shape == (3, 1) and np.all(np.abs(batched["env_action"]) <= 2.0)


@pytest.mark.parametrize("wm", ["decoderfree", "pixel"])
def test_the_other_world_models_export_and_pass_the_check(wm, tmp_path):
    agent = Agent.load(make_run(tmp_path / wm, "CartPole-v1", f"agent.wm={wm}"))
    exported = export_policy(agent, "onnx", tmp_path / "p.onnx", check_steps=30)
    assert exported.check is not None and exported.check.passed
    state = {t["name"] for t in exported.spec["inputs"] if t["role"] == "state"}
    # The pixel model's state is its frame stack; it never reads the previous action, which
    # the file still takes, as the spec says.
    assert state == (
        {"state_vector", "state_prev_action"}
        if wm == "pixel"
        else {"state_deter", "state_stoch", "state_prev_action"}
    )


def test_a_bfloat16_compiled_run_is_exported_as_float32_eager(tmp_path):
    run_dir = make_run(tmp_path / "bf16", "CartPole-v1")
    config = json.loads(RunDir(run_dir).config.read_text())
    agent = Agent.load(run_dir)
    fast = Agent(
        build_config(
            ["debug"], {"task": "CartPole-v1", "compute.precision": "bfloat16", "compute.compile": True}
        ),
        agent.obs_space,
        agent.act_space,
        "cpu",
        agent.obs_converter,
        agent.act_converter,
    )
    fast.load_state_tensors(agent.state_tensors())
    exported = export_policy(fast, "torchscript", tmp_path / "p.pt", check_steps=20)
    assert exported.check is not None and exported.check.passed
    assert config["compute"]["precision"] == "float32"  # the run itself is untouched


def test_cli_export_writes_into_the_run_dir_and_prints_the_check(vector_run, capsys):
    assert main(["export", "--logdir", str(vector_run), "--format", "onnx", "--check-steps", "30"]) == 0
    printed = capsys.readouterr().out
    assert "check: onnxruntime's actions equal the library's on 30 of 30 steps" in printed
    assert (vector_run / "export" / "policy.onnx").is_file()
    assert json.loads((vector_run / "export" / "policy.onnx.json").read_text())["check"]["passed"]


def test_cli_checks_on_the_replay(vector_run, tmp_path, capsys):
    run_dir = tmp_path / "with_replay"
    shutil.copytree(vector_run, run_dir)
    replay = RunDir(run_dir).replay
    replay.mkdir()
    rng = np.random.default_rng(0)
    n = 40
    first = np.zeros(n, bool)
    first[[0, 17]] = True
    arrays = {"vector": rng.normal(size=(n, 4)).astype(np.float32), "is_first": first}
    np.savez(replay / f"{0:03d}-{0:012d}-{n:06d}.npz", **arrays)  # a replay chunk's name and keys
    args = ["export", "--logdir", str(run_dir), "--format", "torchscript", "--check-on", "replay"]
    assert main(args) == 0
    assert f"on 40 of 40 steps (2 episodes) of the replay {replay}" in capsys.readouterr().out


def test_a_file_that_acts_otherwise_fails_the_check_and_is_removed(vector_run, tmp_path, monkeypatch, capsys):
    from dreamrl.export import formats

    real_load = formats.load

    def off_by_one(*args):  # the file as written, its discrete actions shifted by one
        run = real_load(*args)
        return lambda feed: {**(out := run(feed)), "action": (out["action"] + 1) % 2}

    monkeypatch.setattr(formats, "load", off_by_one)
    out = tmp_path / "p.onnx"
    assert main(["export", "--logdir", str(vector_run), "--format", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "does not act as the library does" in err and "first differing step 0" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "p.onnx.json").exists()


def test_export_refuses_a_run_dir_without_a_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    RunDir(run_dir).config.write_text(json.dumps(to_dict(build_config(["debug"], {"task": "CartPole-v1"}))))
    assert main(["export", "--logdir", str(run_dir), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no usable checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (run_dir / "export").exists()


def test_export_refuses_a_planning_agent_and_names_the_way_out(vector_run, tmp_path, capsys):
    agent = Agent.load(vector_run, act="mpc")
    with pytest.raises(ValueError, match="--act actor"):
        export_policy(agent, "onnx", tmp_path / "p.onnx")
    assert not (tmp_path / "p.onnx").exists()
    args = ["export", "--logdir", str(vector_run), "--format", "onnx", "--out", str(tmp_path / "a.onnx")]
    assert main([*args, "--act", "actor", "--check-steps", "5"]) == 0


def docs_example() -> str:
    text = (ROOT / "docs" / "export.md").read_text()
    found = re.search(r"## Drive an env with onnxruntime alone\n.*?```python\n(.*?)```", text, re.S)
    assert found, "docs/export.md: the onnxruntime example is gone"
    return found.group(1)


def test_the_docs_onnxruntime_example_runs_without_torch_or_dreamrl(vector_run, tmp_path):
    code = docs_example()
    assert len(code.splitlines()) <= 35
    export_dir = tmp_path / "runs" / "cartpole" / "export"
    export_dir.mkdir(parents=True)
    agent = Agent.load(vector_run)
    export_policy(agent, "onnx", export_dir / "policy.onnx", check_steps=5)
    # torch and dreamrl made unimportable: the example needs onnxruntime, numpy and gymnasium.
    blocked = "import sys\nsys.modules['torch'] = None\nsys.modules['dreamrl'] = None\n"
    done = subprocess.run(
        [sys.executable, "-c", blocked + code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    printed = float(re.search(r"return ([\d.]+)", done.stdout).group(1))  # type: ignore[union-attr]

    # The library's act over the same episode earns the same return.
    import gymnasium

    env = gymnasium.make("CartPole-v1")
    seed = int(re.search(r"env.reset\(seed=(\d+)\)", code).group(1))  # type: ignore[union-attr]
    obs, _ = env.reset(seed=seed)
    state, total = None, 0.0
    while True:
        action, state = agent.act(obs, state)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    assert printed == total
