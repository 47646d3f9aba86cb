"""Training from a dataset (dreamrl/run/offline.py, dreamrl/datasets/): a Minari dataset
recorded here with its DataCollector and a dreamrl run dir's replay each train a debug
agent with no env step and evaluate it; what does not fit is refused before anything is
written; an offline run resumes, and goes on online with the dataset kept."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import gymnasium
import numpy as np
import pytest

from dreamrl.cli import main
from dreamrl.config import Config, ConfigError, build_config
from dreamrl.datasets import Episode, open_dataset
from dreamrl.datasets.checks import assign_streams, check_episode
from dreamrl.datasets.minari_data import episode_steps, steps_from_transitions
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.logging import read_metrics
from dreamrl.run.machine import read_sessions
from dreamrl.run.offline import train_offline
from dreamrl.rundir import RunDir
from dreamrl.spaces import Space, replay_spaces

minari = pytest.importorskip("minari")

EPISODES = 12
LIMIT = 30  # a time limit short enough that some random episodes are truncated by it


def record_cartpole(root: Path, name: str) -> Path:
    """A Minari dataset of ``EPISODES`` random-policy episodes of CartPole-v1 cut at
    ``LIMIT`` steps, made under ``root`` (nothing goes to the home dir)."""
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        warnings.simplefilter("ignore")  # minari's notes on metadata a test does not need
        env = minari.DataCollector(gymnasium.make("CartPole-v1", max_episode_steps=LIMIT))
        rng = np.random.default_rng(0)
        for episode in range(EPISODES):
            env.reset(seed=episode)
            done = False
            while not done:
                _, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
                done = terminated or truncated
        env.create_dataset(f"cartpole/{name}-v0", algorithm_name="random", author="dreamrl tests")
        env.close()
    return root / "cartpole" / f"{name}-v0"


@pytest.fixture(scope="module")
def cartpole_dataset(tmp_path_factory) -> Path:
    return record_cartpole(tmp_path_factory.mktemp("minari"), "random")


def config(dataset: Path | str, **overrides) -> Config:
    base = {
        "offline.dataset": str(dataset),
        "run.updates": 4,
        "offline.eval_every": 2,
        "run.eval_eps": 2,
        "run.log_every": 0,
        "compute.device": "cpu",
    }
    return build_config(["debug"], {**base, **overrides})


def offline(cfg: Config, run_dir: Path):
    out = io.StringIO()
    trained = train_offline(cfg, run_dir, out=out, progress=False)
    return trained, out.getvalue()


def ended(dataset: Path) -> tuple[int, int]:
    """(terminated, truncated) episodes of a Minari dataset, as Minari itself reads them."""
    episodes = list(minari.MinariDataset(dataset / "data").iterate_episodes())
    terminated = sum(bool(e.terminations[-1]) for e in episodes)
    return terminated, len(episodes) - terminated


def test_a_minari_dataset_trains_an_agent_offline_and_evaluates_it(tmp_path, cartpole_dataset):
    run_dir = tmp_path / "run"
    trained, out = offline(config(cartpole_dataset), run_dir)
    assert trained.updates == 4
    assert trained.state.env_steps == 0  # no env step was taken to train
    evals = [r for r in read_metrics(run_dir) if "eval/return" in r]
    assert [r["train/updates"] for r in evals] == [2, 4]  # every offline.eval_every updates
    assert all(r["step"] == 0 and r["eval/episodes"] == 2 for r in evals)
    # The env the dataset names became the run's: `dreamrl eval` and the rest find it.
    assert json.loads((run_dir / "config.json").read_text())["task"] == "CartPole-v1"
    # The replay the run learned from keeps terminal and truncated episodes apart.
    terminated, truncated = ended(cartpole_dataset)
    assert terminated and truncated, "the recording should hold both kinds of ending"
    stored = list(open_dataset(str(run_dir), trained.agent.config).episodes())
    assert len(stored) == EPISODES
    assert sum(bool(e.steps["is_terminal"][-1]) for e in stored) == terminated
    assert f"{EPISODES} episodes ({terminated} terminal, {truncated} truncated)" in out


def test_a_minari_dataset_is_found_by_its_id(tmp_path, cartpole_dataset, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(cartpole_dataset.parent.parent))
    trained, _ = offline(config("cartpole/random-v0", **{"run.updates": 1, "run.eval_eps": 0}), tmp_path)
    assert trained.updates == 1


def test_a_replay_dir_trains_an_agent_offline_and_evaluates_it(tmp_path, cartpole_run):
    run_dir = tmp_path / "run"
    trained, out = offline(config(cartpole_run, **{"run.updates": 2}), run_dir)
    assert trained.updates == 2
    source = json.loads((cartpole_run / "config.json").read_text())
    assert json.loads((run_dir / "config.json").read_text())["task"] == source["task"]
    assert [r["train/updates"] for r in read_metrics(run_dir) if "eval/return" in r] == [2]
    # The source ran 300 env steps in 2 envs: every stored step is one of those, and the
    # episodes whose start fell out of its replay are the only ones left out.
    held = sum(trained.state.dataset_steps)
    assert 0 < held <= 300
    # Each env's last episode was still running when the source stopped: it is read as
    # truncated where the recording ends, and said so.
    assert out.count("ended without is_last (cut off); read as truncated there") == 2


def test_a_replay_dir_made_with_other_env_settings_is_refused_naming_them(tmp_path, cartpole_run):
    cfg = config(cartpole_run, **{"env.pixels": True})
    with pytest.raises(
        ConfigError, match=r"observation key 'image' is \(absent\) in the dataset.*env\.pixels=False"
    ):
        offline(cfg, tmp_path / "run")


def test_a_dataset_whose_spaces_do_not_fit_the_env_is_refused_naming_the_key(tmp_path, cartpole_dataset):
    run_dir = tmp_path / "run"
    cfg = config(cartpole_dataset, task="Pendulum-v1", **{"offline.finetune": True})
    with pytest.raises(
        ConfigError, match=r"observation key 'vector' is float32\[4\] in the dataset, float32\[3\]"
    ):
        offline(cfg, run_dir)
    assert not run_dir.exists()  # refused before anything was written


def test_the_cli_refuses_a_mismatch_in_one_line(tmp_path, cartpole_dataset, capsys):
    args = [
        "train",
        "--dataset",
        str(cartpole_dataset),
        "--env",
        "MountainCar-v0",
        "--logdir",
        str(tmp_path / "r"),
    ]
    assert main([*args, "--preset", "debug", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "observation key 'vector'" in err and "action is int32[] (2 actions) in the dataset" in err


def test_an_offline_run_resumes_where_it_stopped(tmp_path, cartpole_dataset):
    run_dir = tmp_path / "run"
    first, _ = offline(config(cartpole_dataset, **{"run.updates": 2}), run_dir)
    again, out = offline(config(cartpole_dataset, **{"run.updates": 4}), run_dir)
    assert "Resuming from ckpt-000000000000: 0 env steps, 2 updates" in out
    assert again.updates == 4
    assert again.state.dataset_steps == first.state.dataset_steps  # the dataset was not stored twice
    assert [step for step, _ in list_checkpoints(run_dir)] == [0]
    updates = [r["train/updates"] for r in read_metrics(run_dir) if "eval/return" in r]
    assert updates == [2, 4]
    assert len(read_sessions(run_dir)) == 2  # a machine line a session


def test_env_with_dataset_goes_on_online_with_the_dataset_kept(tmp_path, cartpole_dataset):
    run_dir = tmp_path / "run"
    cfg = config(
        cartpole_dataset,
        task="CartPole-v1",
        **{
            "offline.finetune": True,
            "run.updates": 2,
            "run.steps": 40,
            "run.eval_every": 0,
            "run.eval_eps": 1,
        },
    )
    trained, out = offline(cfg, run_dir)
    assert trained.state.env_steps == 40
    # Online updates follow the train ratio from the first env step on (the dataset fills a
    # batch at once): 32 replayed steps per env step, 8x16 per update, one owed at the start.
    assert trained.state.train_start == 2  # the first step of the 2 envs
    assert trained.updates == 2 + 1 + (40 - 2) * 32 // (8 * 16)
    assert "Resuming from ckpt-000000000000: 0 env steps, 2 updates" in out
    online = trained.updates - 2
    assert f"Done: 40 env steps, {trained.updates:,} updates in " in out
    assert "Of these, 2 updates and " in out and f"were offline; online {online:,} updates in " in out
    assert 0 < trained.state.offline_elapsed <= trained.state.elapsed
    dataset = sum(trained.state.dataset_steps)
    stored = list(open_dataset(str(run_dir), trained.agent.config).episodes())
    assert sum(len(e) for e in stored) >= dataset + 40 - 2 * LIMIT  # unfinished online episodes aside


def test_an_offline_run_rerun_with_an_env_goes_on_online_from_the_trained_agent(tmp_path, cartpole_dataset):
    run_dir = tmp_path / "run"
    settings = {"run.updates": 2, "run.steps": 20, "run.eval_every": 0, "run.eval_eps": 1}
    first, _ = offline(config(cartpole_dataset, **settings), run_dir)
    assert first.state.env_steps == 0
    online, out = offline(
        config(cartpole_dataset, task="CartPole-v1", **{**settings, "offline.finetune": True}), run_dir
    )
    assert out.count("Resuming from ckpt-000000000000: 0 env steps, 2 updates") == 1
    assert online.state.env_steps == 20 and online.updates > 2
    assert online.state.dataset_steps == first.state.dataset_steps


def test_the_cli_trains_from_a_dataset_and_eval_reads_the_run(tmp_path, cartpole_dataset, capsys):
    logdir = tmp_path / "run"
    args = ["train", "--dataset", str(cartpole_dataset), "--logdir", str(logdir), "--preset", "debug"]
    args += ["--no-progress", "run.updates=2", "run.eval_eps=1", "run.diagnose=false", "compute.threads=1"]
    assert main(args) == 0
    assert main(["eval", "--logdir", str(logdir), "--episodes", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 1 and result["env_steps"] == 0


def test_a_dataset_too_big_for_memory_is_refused_with_numbers(tmp_path, cartpole_dataset, monkeypatch):
    monkeypatch.setattr("dreamrl.datasets.checks.available_ram", lambda: 1000)
    with pytest.raises(ConfigError, match=r"steps x 27 bytes = .* GB of replay, but only 0.00 GB of RAM"):
        offline(config(cartpole_dataset), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the checks, one by one

SPACES = replay_spaces({"vector": Space("float32", (2,))}, Space("int32", (), 2))


def episode(**changes) -> SimpleNamespace:
    """A Minari-like record of 3 steps (4 observations), changed as asked."""
    raw = {
        "observations": np.zeros((4, 2), np.float32),
        "actions": np.array([0, 1, 1]),
        "rewards": np.ones(3),
        "terminations": np.array([False, False, True]),
        "truncations": np.zeros(3, bool),
        "id": 7,
    }
    return SimpleNamespace(**{**raw, **changes})


def steps_of(raw: SimpleNamespace) -> dict[str, np.ndarray]:
    space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    converter = ObsConverter.from_gym(space, (64, 64))
    actions = ActionConverter.from_gym(gymnasium.spaces.Discrete(2))
    return episode_steps("episode 7", raw, converter, actions)


def test_a_minari_episode_becomes_the_replay_layout():
    steps = steps_of(episode())
    assert steps["is_first"].tolist() == [True, False, False, False]
    assert steps["is_last"].tolist() == [False, False, False, True]
    assert steps["is_terminal"].tolist() == [False, False, False, True]
    assert steps["reward"].tolist() == [0, 1, 1, 1]  # received on arriving at each step
    assert steps["action"].tolist() == [0, 1, 1, 0]  # taken at each step; none at the last
    check_episode(Episode("e", steps), SPACES)


def test_a_truncated_episode_is_never_terminal():
    truncated = steps_of(episode(terminations=np.zeros(3, bool), truncations=np.array([False, False, True])))
    assert truncated["is_last"][-1] and not truncated["is_terminal"].any()
    both = steps_of(episode(truncations=np.array([False, False, True])))  # terminal on the limit's step
    assert both["is_terminal"][-1]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"terminations": np.array([True, False, True])},
            r"episode 7: terminated at step 1 of 3, before its last",
        ),
        ({"truncations": np.array([False, True, False])}, r"episode 7: truncated at step 2 of 3"),
        (
            {"terminations": np.zeros(3, bool)},
            r"episode 7: its last step is neither terminated nor truncated",
        ),
        ({"actions": np.array([0, 1])}, r"episode 7: 3 rewards but 2 actions"),
    ],
)
def test_a_minari_episode_with_its_end_out_of_place_is_refused_naming_it(changes, message):
    with pytest.raises(ConfigError, match=message):
        steps_of(episode(**changes))


@pytest.mark.parametrize(
    ("key", "value", "t", "message"),
    [
        ("vector", np.nan, 2, r"e: 'vector' is not finite at step 2 of 4"),
        ("reward", np.inf, 1, r"e: 'reward' is not finite at step 1 of 4"),
        ("is_last", True, 1, r"e: is_last is out of place at step 1 of 4"),
        ("is_first", True, 3, r"e: is_first is out of place at step 3 of 4"),
        ("is_terminal", True, 2, r"e: is_terminal at step 2 of 4, where the episode does not end"),
        ("action", 5, 1, r"e: the action at step 1 of 4 lies outside the action space"),
    ],
)
def test_an_episode_with_a_bad_value_is_refused_naming_key_and_step(key, value, t, message):
    steps = steps_from_transitions(
        {"vector": np.zeros((4, 2), np.float32)}, np.array([0, 1, 0], np.int32), np.ones(3), True
    )
    steps[key][t] = value
    with pytest.raises(ConfigError, match=message):
        check_episode(Episode("e", steps), SPACES)


def test_episodes_go_to_the_emptiest_stream_in_order():
    streams, held = assign_streams([10, 4, 4, 4, 9], 2)
    assert streams == [0, 1, 1, 1, 0]
    assert held == [19, 12]


def test_a_checkpoint_saved_again_at_its_step_survives_a_crash_between_renames(tmp_path):
    """Offline checkpoints are all at env step 0: the one there is set aside, not deleted,
    until its replacement is in place, and found again after a crash in between."""
    from dreamrl.run import checkpoint as ckptlib

    class Saved:
        def save(self, directory):
            (directory / "agent.json").write_text("{}")

    first = ckptlib.save_checkpoint(tmp_path, 0, Saved(), {"n": 1}, keep=2)
    with contextlib.suppress(RuntimeError), pytest.MonkeyPatch.context() as mp:
        renames = []

        def rename(src, dst):
            renames.append(dst)
            if len(renames) == 2:  # the new checkpoint's rename: the crash
                raise RuntimeError("killed")
            return ckptlib.os.replace(src, dst)

        mp.setattr(ckptlib.os, "rename", rename)
        ckptlib.save_checkpoint(tmp_path, 0, Saved(), {"n": 2}, keep=2)
    assert not first.exists()
    [(step, found)] = ckptlib.list_checkpoints(tmp_path)
    assert step == 0 and json.loads((found / "loop.json").read_text()) == {"n": 1}
    assert ckptlib.remove_partial_saves(tmp_path) == []  # it is kept: it is the checkpoint
    ckptlib.verify_checkpoint(found)
    again = ckptlib.save_checkpoint(tmp_path, 0, Saved(), {"n": 3}, keep=2)
    assert [p for _, p in ckptlib.list_checkpoints(tmp_path)] == [again]


def test_tensorboard_plots_offline_records_against_updates_and_online_ones_against_env_steps(
    tmp_path, cartpole_dataset
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    cfg = config(
        cartpole_dataset,
        task="CartPole-v1",
        **{
            "offline.finetune": True,
            "run.updates": 4,
            "run.steps": 40,
            "run.eval_every": 0,
            "run.eval_eps": 1,
        },
    )
    offline(cfg, run_dir)
    events = EventAccumulator(str(RunDir(run_dir).tensorboard))
    events.Reload()
    # Logged every update offline (run.log_every=0) and evaluated every 2 (offline.eval_every):
    # the axis is the updates themselves, where env steps would have put every point at 0.
    assert [e.step for e in events.Scalars("offline/fps/train")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("offline/eval/return")] == [2, 4]
    online = [e.step for e in events.Scalars("train/updates")]
    assert online and all(step > 0 for step in online) and online == sorted(online)
    # The file keeps the env step for every record, offline ones at 0.
    offline_logs = [
        r for r in read_metrics(run_dir) if "fps/train" in r and r.get("train/updates", 0) in range(1, 5)
    ]
    assert [r["step"] for r in offline_logs] == [0] * 4
