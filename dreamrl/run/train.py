"""The training loop: collect, add to replay, train at ``train_ratio``, log, evaluate, save.

``train`` takes factories (an env maker), so tests can hand it a dummy env. Rerunning
it on the same run dir resumes from the newest checkpoint: weights, optimiser, return
normaliser, slow critic, generators, counters and the replay (from its chunk files).
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dreamrl.agent import Agent
from dreamrl.config import Config, to_dict
from dreamrl.envs import TRAIN_STREAM, env_seed, make_env
from dreamrl.envs.gym_adapter import GymEnv
from dreamrl.envs.pool import EnvPool
from dreamrl.envs.spaces import STEP_KEYS, Space
from dreamrl.replay import Replay
from dreamrl.run.checkpoint import latest_checkpoint, load_loop_state, save_checkpoint
from dreamrl.run.evaluate import eval_seeds, evaluate
from dreamrl.run.logging import Mean, MetricsLogger
from dreamrl.run.progress import Progress

CONFIG_FILE = "config.json"
EnvMaker = Callable[[Config, "int | None"], GymEnv]


@dataclass
class LoopState:
    """Counters of the loop, saved with every checkpoint."""

    env_steps: int = 0
    train_start: int = -1  # env step at which the replay first filled a batch
    updates: int = 0
    episodes: int = 0
    eval_episodes: int = 0  # evaluation episodes run so far: the next seeds' offset
    last_eval: int = 0
    elapsed: float = 0.0
    last_return: float = float("nan")
    last_eval_return: float = float("nan")
    replay: dict[str, Any] = field(default_factory=dict)


def replay_spaces(obs_space: dict[str, Space], act_space: Space) -> dict[str, Space]:
    """Everything a replay step holds: observations, the action, reward and flags."""
    return {
        **obs_space,
        "action": act_space,
        "reward": Space("float32", ()),
        "is_first": Space("bool", ()),
        "is_last": Space("bool", ()),
        "is_terminal": Space("bool", ()),
    }


def updates_due(state: LoopState, config: Config) -> int:
    """Train steps owed so that replayed steps / env steps tracks ``train_ratio``."""
    if state.train_start < 0:
        return 0
    per_step = config.run.train_ratio / (config.batch_size * config.batch_length)
    owed = 1 + math.floor((state.env_steps - state.train_start) * per_step)
    return max(0, owed - state.updates)


def _env_factory(maker: EnvMaker, config: Config, seed: int) -> GymEnv:
    return maker(config, seed)


def train(
    config: Config,
    run_dir: str | Path,
    maker: EnvMaker = make_env,
    out: TextIO = sys.stdout,
    progress: bool = True,
) -> LoopState:
    """Train (or resume training) ``config`` in ``run_dir`` until ``run.steps``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps(to_dict(config), indent=1))
    run = config.run
    factories = [
        functools.partial(_env_factory, maker, config, env_seed(config.seed, TRAIN_STREAM, i))
        for i in range(run.envs)
    ]
    pool = EnvPool(factories, run.env_workers)
    try:
        return _loop(config, run_dir, pool, maker, out, progress)
    finally:
        pool.close()


def _loop(
    config: Config, run_dir: Path, pool: EnvPool, maker: EnvMaker, out: TextIO, progress: bool
) -> LoopState:
    run = config.run
    agent = Agent(
        config,
        pool.obs_space,
        pool.act_space,
        obs_converter=pool.obs_converter,
        act_converter=pool.act_converter,
    )
    replay = Replay(
        replay_spaces(pool.obs_space, pool.act_space),
        config.replay.size,
        run.envs,
        config.batch_length,
        config.replay.online,
        config.replay.chunksize,
        run_dir / "replay",
        config.seed,
    )
    state = LoopState()
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        from safetensors.torch import load_file

        agent.load_state_tensors(load_file(str(ckpt / "agent.safetensors")))
        meta = json.loads((ckpt / "agent.json").read_text())
        agent.updates = int(meta["updates"])
        state = LoopState(**load_loop_state(ckpt))
        loaded = replay.load()
        replay.restore(state.replay)
        print(
            f"Resuming from {ckpt.name}: {state.env_steps:,} env steps, "
            f"{state.updates:,} updates, {loaded:,} replay steps loaded.",
            file=out,
        )
    _describe(config, agent, pool, replay, out)
    logger = MetricsLogger(run_dir)
    train_mean, episode_mean = Mean(), Mean()
    returns = np.zeros(run.envs)
    lengths = np.zeros(run.envs, np.int64)
    bar = Progress(run.steps, state.env_steps, enabled=progress, out=out)
    policy_state = None
    actions = np.zeros((run.envs, *pool.act_space.shape), pool.act_space.dtype)
    session_start = time.time()
    elapsed_before = state.elapsed
    last_log = last_save = time.time()
    log_env_steps, log_updates = state.env_steps, state.updates

    def save() -> None:
        state.elapsed = elapsed_before + time.time() - session_start
        replay.flush(force=True)
        state.replay = replay.state()
        save_checkpoint(run_dir, state.env_steps, agent, asdict(state), run.keep_checkpoints)

    def run_eval() -> None:
        if not run.eval_eps:
            return
        seeds = eval_seeds(config.seed, state.eval_episodes, run.eval_eps)
        result = evaluate(agent, functools.partial(maker, config, None), seeds, run.eval_envs)
        state.eval_episodes += run.eval_eps
        state.last_eval = state.env_steps
        state.last_eval_return = result.mean
        logger.write(
            state.env_steps,
            {
                "eval/return": result.mean,
                "eval/return_std": result.std,
                "eval/length": float(np.mean(result.lengths)),
                "eval/returns": result.returns,
                "eval/episodes": len(result.returns),
                "time/elapsed": _elapsed(),
            },
        )
        bar.note(
            f"eval at {state.env_steps:,}: return {result.mean:.1f} ± {result.std:.1f} "
            f"over {len(result.returns)} episodes"
        )

    def _elapsed() -> float:
        return elapsed_before + time.time() - session_start

    try:
        obs = pool.step(actions)
        while state.env_steps < run.steps:
            actions, policy_state = agent.policy(obs, policy_state, deterministic=False)
            replay.add(
                {**{k: obs[k] for k in pool.obs_space}, "action": actions, **{k: obs[k] for k in STEP_KEYS}}
            )
            state.env_steps += run.envs
            returns += obs["reward"]
            lengths += 1
            for i in np.flatnonzero(obs["is_last"]):
                state.episodes += 1
                state.last_return = float(returns[i])
                episode_mean.add({"episode/score": returns[i], "episode/length": lengths[i]})
            returns[obs["is_first"] | obs["is_last"]] = 0.0
            lengths[obs["is_last"]] = 0
            if state.train_start < 0 and replay.ready(config.batch_size):
                state.train_start = state.env_steps
            for _ in range(updates_due(state, config)):
                train_mean.add(agent.train_step(replay.sample(config.batch_size)))
                state.updates += 1
            bar.update(state.env_steps, state.last_return, state.last_eval_return)
            now = time.time()
            if now - last_log >= run.log_every:
                metrics = {**train_mean.result(), **episode_mean.result()}
                metrics["fps/env"] = (state.env_steps - log_env_steps) / (now - last_log)
                metrics["fps/train"] = (state.updates - log_updates) / (now - last_log)
                metrics["replay/steps"] = float(len(replay))
                metrics["time/elapsed"] = _elapsed()
                logger.write(state.env_steps, metrics)
                last_log, log_env_steps, log_updates = now, state.env_steps, state.updates
            if run.eval_every and state.env_steps - state.last_eval >= run.eval_every:
                run_eval()
            if now - last_save >= run.save_every:
                save()
                last_save = time.time()
            obs = pool.step(actions)
        if state.last_eval != state.env_steps or not run.eval_every:
            run_eval()
        metrics = {**train_mean.result(), **episode_mean.result(), "time/elapsed": _elapsed()}
        logger.write(state.env_steps, metrics)
        save()
    except KeyboardInterrupt:
        bar.note("interrupted: saving a checkpoint before exiting")
        save()
        raise
    finally:
        bar.close()
        logger.close()
    print(
        f"Done: {state.env_steps:,} env steps, {state.updates:,} updates in "
        f"{state.elapsed / 60:.1f} min. Last eval return {state.last_eval_return:.1f}.",
        file=out,
    )
    print(f"Logs: {run_dir / 'metrics.jsonl'} (TensorBoard: {run_dir / 'tb'})", file=out)
    ckpt = latest_checkpoint(run_dir)
    print(f"Checkpoint: {ckpt}", file=out)
    return state


def _describe(config: Config, agent: Agent, pool: EnvPool, replay: Replay, out: TextIO) -> None:
    keys = ", ".join(f"{k} {s.dtype}{list(s.shape)}" for k, s in pool.obs_space.items())
    act = pool.act_space
    act_desc = f"discrete({act.classes})" if act.discrete else f"continuous{list(act.shape)}"
    per_update = config.batch_size * config.batch_length
    print(
        f"Env {config.task}: observations {keys}; actions {act_desc}; {config.run.envs} envs "
        f"({config.run.env_workers}).",
        file=out,
    )
    print(
        f"Agent: {agent.param_count():,} parameters on {agent.device}; presets "
        f"{', '.join(config.presets) or 'none'}.",
        file=out,
    )
    print(
        f"Training: {config.run.steps:,} env steps, one update of {config.batch_size}x"
        f"{config.batch_length} every {per_update / config.run.train_ratio:g} env steps "
        f"(train_ratio {config.run.train_ratio:g}); replay holds {replay.slots * replay.streams:,} steps.",
        file=out,
    )
