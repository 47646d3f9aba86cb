"""The loop is handed its parts: a dummy agent, a dummy replay and a list logger run
through ``train`` (and its resume) with no class patched, and an evaluation hook is
called with the evaluation's result."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import gymnasium
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from dreamrl.agents.base import Agent, TrainResult
from dreamrl.config import Config, build_config
from dreamrl.envs.gym_adapter import GymEnv
from dreamrl.replay import Replay
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.machine import read_sessions
from dreamrl.run.train import Hooks, make_replay, train
from dreamrl.rundir import AGENT_META, AGENT_WEIGHTS, RunDir
from dreamrl.spaces import Space

import fixtures.tiny_env  # noqa: F401 - registers TinyLine-v0


class DummyAgent:
    """Acts 0 always; its 'weights' are one counter of the batches it trained on, and
    its policy state counts the steps each env has taken since its episode began."""

    def __init__(self, config, obs_space, act_space, obs_converter=None, act_converter=None):
        self.config, self.obs_space, self.act_space = config, dict(obs_space), act_space
        self.device = torch.device("cpu")
        self.updates = 0
        self.seen = torch.zeros(())  # batches trained on: checkpointed state
        self.policy_calls = 0
        self.deterministic: list[bool] = []  # how each policy call was asked to act

    def policy(self, obs, state, deterministic=False):
        self.policy_calls += 1
        self.deterministic.append(deterministic)
        n = len(obs["is_first"])
        steps = torch.zeros(n) if state is None else state
        steps = torch.where(torch.as_tensor(obs["is_first"]), torch.zeros(n), steps + 1)
        actions = np.zeros((n, *self.act_space.shape), self.act_space.dtype)
        return actions, steps

    def train_step(self, data):
        assert data["is_first"].shape == (self.config.batch_size, self.config.batch_length)
        self.updates += 1
        self.seen += 1
        return TrainResult({"loss/dummy": float(self.updates)})

    def weights_finite(self):
        return True

    def param_count(self):
        return 0

    def save(self, directory: Path) -> None:
        meta = {
            "updates": self.updates,
            "obs_space": {k: s.to_json() for k, s in self.obs_space.items()},
            "act_space": self.act_space.to_json(),
        }
        (directory / AGENT_META).write_text(json.dumps(meta))
        save_file({"seen": self.seen.clone()}, str(directory / AGENT_WEIGHTS))

    def restore(self, tensors, meta):
        self.seen = tensors["seen"].clone()
        self.updates = int(meta["updates"])

    def policy_state_tensors(self, state):
        return {"policy.steps": state}

    def policy_state_from_tensors(self, tensors):
        return tensors.get("policy.steps")

    def select_rows(self, state, rows):
        return state[rows]


class CountingReplay(Replay):
    """The real replay, counting what the loop adds and samples."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.added = self.sampled = 0

    def add(self, steps):
        self.added += 1
        super().add(steps)

    def sample(self, batch_size):
        self.sampled += 1
        return super().sample(batch_size)


class ListLogger:
    def __init__(self):
        self.records: list[tuple[int, dict]] = []
        self.closed = False

    def write(self, step, metrics, offline_updates=None):
        self.records.append((step, dict(metrics)))

    def close(self):
        self.closed = True


def tiny(config: Config, seed: int | None, mode: str = "train") -> GymEnv:
    return GymEnv(gymnasium.make("TinyLine-v0"), config.env.size, seed=seed)  # 20-step time limit


def test_a_dummy_agent_replay_and_logger_run_the_loop_and_resume(tmp_path):
    config = build_config(
        ["debug"],
        {"task": "tiny", "run.steps": 300, "run.eval_every": 150, "run.log_every": 0, "run.train_ratio": 64},
    )
    built: dict[str, object] = {}

    def make_agent(*args, **kwargs):
        built["agent"] = DummyAgent(*args, **kwargs)
        return built["agent"]

    def counting_replay(config, spaces, directory):
        built["replay"] = CountingReplay(
            spaces, 1000, config.run.envs, config.batch_length, True, 64, directory, config.seed
        )
        return built["replay"]

    def logger(run_dir):
        built["logger"] = ListLogger()
        return built["logger"]

    evaluated = []

    def hook(agent, result, step):
        evaluated.append((step, len(result.returns), len(result.episodes)))
        return {"hook/seen": float(agent.seen)}

    hooks = Hooks(after_eval=(hook,), record_steps=100)
    out = io.StringIO()
    parts = (tiny, make_agent, counting_replay, logger, hooks)
    result = train(config, tmp_path, *parts, out=out, progress=False)
    agent, replay, log = built["agent"], built["replay"], built["logger"]
    assert isinstance(agent, Agent) and result.agent is agent
    state = result.state
    assert state.env_steps == 300 and agent.policy_calls >= 300 // config.run.envs
    per_step = config.run.train_ratio / (config.batch_size * config.batch_length)
    assert agent.updates == replay.sampled == 1 + math.floor((300 - state.train_start) * per_step)
    assert replay.added == 300 // config.run.envs  # one batch of steps per loop iteration
    assert log.closed
    assert [step for step, _, _ in evaluated] == [150, 300]
    assert all(n == config.run.eval_eps and recorded == n for _, n, recorded in evaluated)
    hook_records = [(s, m) for s, m in log.records if "hook/seen" in m]
    assert [s for s, _ in hook_records] == [150, 300]
    assert any("loss/dummy" in m for _, m in log.records)

    # Resume with more steps: the same factories restore the dummy from its checkpoint.
    longer = build_config(
        ["debug"],
        {"task": "tiny", "run.steps": 400, "run.eval_every": 150, "run.log_every": 0, "run.train_ratio": 64},
    )
    updates_before = agent.updates
    again = train(longer, tmp_path, *parts, out=out, progress=False)
    resumed = built["agent"]
    assert resumed is not agent and again.state.env_steps == 400
    assert "Resuming from ckpt-000000000300" in out.getvalue()
    assert resumed.updates == 1 + math.floor((400 - state.train_start) * per_step)
    assert float(resumed.seen) == resumed.updates  # restored, then trained on
    assert resumed.updates > updates_before
    ckpt = RunDir(tmp_path).checkpoint(400)
    assert float(load_file(str(ckpt / AGENT_WEIGHTS))["seen"]) == resumed.updates
    # Each session recorded the machine it ran on, and where in the run it began.
    assert [s["env_steps"] for s in read_sessions(tmp_path)] == [0, 300]


def test_the_default_replay_factory_builds_the_on_disk_replay(tmp_path):
    config = build_config(["debug"], {"task": "tiny"})
    spaces = {"vector": Space("float32", (2,)), "action": Space("int32", (), 2)}
    replay = make_replay(config, spaces, tmp_path / "replay")
    assert isinstance(replay, Replay) and replay.streams == config.run.envs
    assert replay.length == config.batch_length


def test_evaluation_acts_deterministically_unless_run_eval_sample(tmp_path):
    """Collection always samples; evaluation takes the mode, or samples with run.eval_sample
    (the paper's Atari protocol)."""
    agents: list[DummyAgent] = []

    def make_agent(*args, **kwargs):
        agents.append(DummyAgent(*args, **kwargs))
        return agents[-1]

    for sample in (False, True):
        overrides = {"task": "tiny", "run.steps": 40, "run.eval_every": 0, "run.eval_sample": sample}
        config = build_config(["debug"], overrides)
        train(config, tmp_path / str(sample), tiny, make_agent, out=io.StringIO(), progress=False)
        modes = agents[-1].deterministic
        collecting = 40 // config.run.envs
        assert not any(modes[:collecting])  # collection samples
        assert modes[collecting:] and all(m is (not sample) for m in modes[collecting:])


class MeasuringAgent(DummyAgent):
    """The dummy with ``policy_metrics``: how many policy calls, and how many of them
    deterministic (evaluation's), since the last read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unread = 0

    def policy(self, obs, state, deterministic=False):
        self.unread += 1
        return super().policy(obs, state, deterministic)

    def policy_metrics(self):
        calls, self.unread = self.unread, 0
        evaluating = sum(self.deterministic[len(self.deterministic) - calls :]) if calls else 0
        return {"act/calls": float(calls), "act/deterministic": float(evaluating)} if calls else {}


def test_what_acting_measured_is_logged_apart_for_collection_and_evaluation(tmp_path):
    """The loop drains ``policy_metrics`` into its log records, and before and after each
    evaluation, so that evaluation's acting lands in the evaluation's record only; an
    agent without the method logs nothing of the kind."""
    config = build_config(
        ["debug"],
        {"task": "tiny", "run.steps": 120, "run.eval_every": 60, "run.log_every": 0, "run.train_ratio": 8},
    )
    loggers: list[ListLogger] = []

    def logger(run_dir):
        loggers.append(ListLogger())
        return loggers[-1]

    agents: list[DummyAgent] = []

    def make(kind):
        def build(*args, **kwargs):
            agents.append(kind(*args, **kwargs))
            return agents[-1]

        return build

    train(
        config,
        tmp_path / "measuring",
        tiny,
        make(MeasuringAgent),
        make_replay,
        logger,
        out=io.StringIO(),
        progress=False,
    )
    records = [m for _, m in loggers[-1].records]
    collected = [m for m in records if "act/calls" in m]
    evaluated = [m for m in records if "eval/act/calls" in m]
    assert collected and all(m["act/deterministic"] == 0 for m in collected)
    assert len(evaluated) == 2 and all(
        m["eval/act/deterministic"] == m["eval/act/calls"] > 0 for m in evaluated
    )
    assert (
        sum(m["act/calls"] for m in collected) + sum(m["eval/act/calls"] for m in evaluated)
        == agents[-1].policy_calls
    )
    train(
        config,
        tmp_path / "plain",
        tiny,
        make(DummyAgent),
        make_replay,
        logger,
        out=io.StringIO(),
        progress=False,
    )
    assert not any(k.startswith(("act/", "eval/act/")) for _, m in loggers[-1].records for k in m)


def test_a_failing_after_eval_hook_is_reported_and_training_goes_on(tmp_path):
    """An observer's bug (the diagnostics) must not end a run of hours: the loop says
    which hook failed and why, prints its traceback, and the other hooks and the training
    go on to the end, checkpoint included."""
    config = build_config(
        ["debug"],
        {"task": "tiny", "run.steps": 300, "run.eval_every": 150, "run.log_every": 0, "run.train_ratio": 64},
    )

    def broken(agent, result, step):
        raise KeyError("kl")

    def working(agent, result, step):
        return {"hook/step": float(step)}

    logged = []

    def logger(run_dir):
        logged.append(ListLogger())
        return logged[-1]

    out = io.StringIO()
    hooks = Hooks(after_eval=(broken, working), record_steps=100)
    result = train(config, tmp_path, tiny, DummyAgent, make_replay, logger, hooks, out=out, progress=False)
    assert result.state.env_steps == 300
    text = out.getvalue()
    for step in (150, 300):
        said = f"warning: the hook broken after the evaluation at {step:,} env steps failed (KeyError: 'kl')"
        assert said in text
    assert text.count("Traceback (most recent call last)") == 2
    assert [s for s, m in logged[0].records if "hook/step" in m] == [150, 300]
    assert list_checkpoints(tmp_path)[-1][0] == 300
