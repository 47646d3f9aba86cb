"""Training a model-free baseline into a run dir: the ``ppo``, ``sac`` and ``dqn`` entries
of :data:`dreamrl.agents.TRAINERS`.

:func:`train` has the signature of :func:`dreamrl.run.train.train` and keeps its
promises: every check (the config against the saved one, the env's spaces against the
checkpoint's, the algorithm against the action space) runs before anything is written;
the run dir is locked against a second writer; the run dir has the same layout
(``config.json``, ``metrics.jsonl`` with ``eval/*`` at the env step, ``checkpoints/``);
SIGINT or SIGTERM saves a checkpoint before the run exits; rerunning the same command
resumes from the newest good checkpoint. SB3's ``learn`` runs the updates
(``reset_num_timesteps=False`` on resume, so its step counter and schedules continue);
:class:`~dreamrl.baselines.callback.RunCallback` does the rest.

Where a resume departs from a Dreamer run's: the envs start fresh episodes (the
unfinished ones end at the checkpoint, each env's episode count and seeds go on), PPO
collects a fresh rollout, and the random generators start anew, so a resumed baseline
does not match an uninterrupted one step for step.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dreamrl.baselines.agent import BaselineAgent
from dreamrl.baselines.algorithms import algorithm, build_model, check_action_space
from dreamrl.baselines.env import EnvClock, make_vec_env
from dreamrl.baselines.observations import policy_name
from dreamrl.baselines.zoo import tuned
from dreamrl.config import Config, flatten, to_dict
from dreamrl.envs import make_env as make_default_env
from dreamrl.run import resume as resumelib
from dreamrl.run.checkpoint import latest_checkpoint, load_loop_state, remove_partial_saves, resume_point
from dreamrl.run.disk import disk_full_message, is_disk_full, write_atomic
from dreamrl.run.errors import RunError
from dreamrl.run.interrupt import stop_on_signals
from dreamrl.run.lock import exclusive
from dreamrl.run.logging import MetricsLogger
from dreamrl.run.machine import record_session
from dreamrl.run.progress import Progress
from dreamrl.run.state import LoopState
from dreamrl.run.train import EnvMaker, Hooks, LoggerMaker, Trained
from dreamrl.rundir import RunDir

if TYPE_CHECKING:
    from dreamrl.baselines.callback import RunCallback


def train(
    config: Config,
    run_dir: str | Path,
    make_env: EnvMaker = make_default_env,
    make_logger: LoggerMaker = MetricsLogger,
    hooks: Hooks | None = None,
    out: TextIO | None = None,
    progress: bool = True,
    **_: Any,
) -> Trained:
    """Train (or resume) the baseline ``config.agent.kind`` in ``run_dir`` until
    ``run.steps`` env steps, or until ``hooks.stop(state)`` says so after an evaluation.
    Keyword arguments of the Dreamer loop that a baseline has no use for (``make_agent``,
    ``make_replay``) are accepted and ignored. ``out``: where it reports (``sys.stdout``
    as it is at the call)."""
    from stable_baselines3.common.logger import Logger

    out = out or sys.stdout

    from dreamrl.baselines.callback import MetricsWriter, RunCallback

    run_dir = Path(run_dir)
    hooks = hooks if hooks is not None else Hooks()
    resumelib.check_config(run_dir, config)
    ckpt = resume_point(run_dir, out)
    state = LoopState.from_json(load_loop_state(ckpt)) if ckpt is not None else LoopState()
    if len(state.env_episodes) != config.agent.baseline.envs:
        state.env_episodes = [0] * config.agent.baseline.envs
    with contextlib.ExitStack() as held:
        locked = run_dir.is_dir()
        if locked:  # an existing run: a second writer is refused before anything else
            held.enter_context(exclusive(run_dir))
        clock = EnvClock()
        agent = _build(config, make_env, state, ckpt, clock, held)
        interrupt = held.enter_context(stop_on_signals())
        # Every check has passed: only now does anything get written.
        run_dir.mkdir(parents=True, exist_ok=True)
        if not locked:
            held.enter_context(exclusive(run_dir))
        write_atomic(RunDir(run_dir).config, json.dumps(to_dict(config), indent=1))
        for path in remove_partial_saves(run_dir):
            print(f"Removed {path.name}: a checkpoint save that never finished.", file=out)
        if ckpt is not None:
            loaded = agent.restore_dir(ckpt)
            print(
                f"Resuming from {ckpt.name}: {state.env_steps:,} env steps, {agent.updates:,} updates, "
                f"{loaded:,} replay steps loaded; the envs start fresh episodes.",
                file=out,
            )
        _describe(config, agent, out)
        record_session(run_dir, state.env_steps, config.compute.device)
        logger = make_logger(run_dir)
        agent.model.set_logger(Logger(None, [MetricsWriter(logger)]))
        bar = Progress(config.run.steps, state.env_steps, enabled=progress, out=out)
        session = RunCallback(config, run_dir, agent, state, logger, hooks, clock, interrupt, bar, make_env)
        try:
            _learn(config, agent, session)
        except KeyboardInterrupt:
            bar.note("interrupted: saving a checkpoint before exiting")
            session.save()
            raise
        except OSError as e:
            if not is_disk_full(e):
                raise
            raise RunError(disk_full_message(run_dir, e, latest_checkpoint(run_dir))) from None
        finally:
            bar.close()
            _close(logger)
        _summary(state, agent, session.session_split(), run_dir, out)
        return Trained(state, agent)


def _build(
    config: Config,
    make_env: EnvMaker,
    state: LoopState,
    ckpt: Path | None,
    clock: EnvClock,
    held: contextlib.ExitStack,
) -> BaselineAgent:
    """The training envs and the SB3 model on them, after every check a resume needs:
    the algorithm against the action space, the spaces against the checkpoint's."""
    from stable_baselines3.common.utils import set_random_seed

    venv = make_vec_env(config, make_env, list(state.env_episodes), clock)
    held.callback(venv.close)
    env = venv.envs[0].env  # the dreamrl env under env 0's wrapper
    obs_space, act_space = env.obs_space, env.act_space
    check_action_space(config.agent.kind, act_space, config.task)
    if ckpt is not None:
        resumelib.check_spaces(ckpt, obs_space, act_space)
    set_random_seed(config.seed)  # weights and SB3's sampling; env episodes have seeds of their own
    model = build_model(config, obs_space, act_space, env=venv)
    model.action_space.seed(config.seed)
    return BaselineAgent(config, obs_space, act_space, model, env.obs_converter, env.act_converter)


def _learn(config: Config, agent: BaselineAgent, session: RunCallback) -> None:
    """SB3's ``learn`` up to ``run.steps``, then the run's last evaluation, log and save.
    A stop signal comes out of it as KeyboardInterrupt (the caller saves)."""
    model, state, run = agent.model, session.state, config.run
    if model.num_timesteps < run.steps:
        model.learn(run.steps - model.num_timesteps, callback=session, reset_num_timesteps=False)
    state.env_steps = int(model.num_timesteps)
    if session.stopped is not None and session.interrupt.signal is not None:
        raise KeyboardInterrupt(session.stopped)
    if session.stopped is not None:
        session.bar.note(session.stopped)
    model.logger.dump(model.num_timesteps)  # the last update's metrics
    if state.last_eval != state.env_steps or not run.eval_every:
        session.timed("eval", session.evaluate)
    session.log(time.time())
    session.save()


def _close(logger: Any) -> None:
    try:
        logger.close()
    except OSError as e:
        if not is_disk_full(e):
            raise


def _describe(config: Config, agent: BaselineAgent, out: TextIO) -> None:
    import stable_baselines3

    algo = algorithm(config.agent.kind)
    keys = ", ".join(f"{k} {s.dtype}{list(s.shape)}" for k, s in agent.obs_space.items())
    act = agent.act_space
    act_desc = f"discrete({act.classes})" if act.discrete else f"continuous{list(act.shape)}"
    b = config.agent.baseline
    print(
        f"Env {config.task}: observations {keys}; actions {act_desc}; {b.envs} envs; "
        f"{b.frame_stack} observation(s) stacked.",
        file=out,
    )
    print(
        f"Agent: {algo.name} of stable-baselines3 {stable_baselines3.__version__} "
        f"({policy_name(agent.obs_space)}), {agent.param_count():,} parameters on {agent.device}; "
        f"presets {', '.join(config.presets) or 'none'}.",
        file=out,
    )
    kind = config.agent.kind
    settings = ", ".join(f"{k}={v}" for k, v in flatten(getattr(b, kind)).items())
    source = (
        f"RL Zoo's tuned settings for {config.task} under any named"
        if b.zoo and tuned(kind, config.task, config.env.pixels)
        else "SB3's defaults under any named"
    )
    print(f"Training: {config.run.steps:,} env steps; {source}: {settings}.", file=out)


def _summary(
    state: LoopState, agent: BaselineAgent, split: Mapping[str, float], run_dir: Path, out: TextIO
) -> None:
    print(
        f"Done: {state.env_steps:,} env steps, {agent.updates:,} updates in {state.elapsed / 60:.1f} min. "
        f"Last eval return {state.last_eval_return:.1f}.",
        file=out,
    )
    parts = ", ".join(f"{part} {100 * frac:.0f}%" for part, frac in split.items())
    print(f"Wall time of this session: {parts}.", file=out)
    files = RunDir(run_dir)
    print(f"Logs: {files.metrics} (TensorBoard: {files.tensorboard})", file=out)
    print(f"Checkpoint: {latest_checkpoint(run_dir)}", file=out)
