"""Which stable-baselines3 algorithm each baseline kind is, where it can act, and the
settings it is built with from the config (``agent.baseline.*``).

:data:`ALGORITHMS` is the one table: ``ppo`` acts in any action space, ``sac`` only in a
continuous one and ``dqn`` only in a discrete one; :func:`check_action_space` refuses the
others before anything is written. :func:`build_model` builds the SB3 model for an env (the
vectorised training envs) or, to act only, for the spaces alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dreamrl.baselines.observations import policy_name, sb3_action_space, sb3_space
from dreamrl.config import Config, ConfigError
from dreamrl.spaces import Space


@dataclass(frozen=True)
class Algorithm:
    """One SB3 algorithm as a baseline kind."""

    name: str  # as SB3 spells it
    target: str  # "module:Class"
    discrete: bool  # acts in Discrete action spaces
    continuous: bool  # acts in Box action spaces
    replay: bool  # off-policy: a replay buffer is part of its checkpoint
    settings: Callable[[Config], dict[str, Any]]

    def cls(self) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


def schedule(value: float, kind: str) -> Any:
    """A constant, or SB3's linear schedule from ``value`` down to 0 at the end of the run
    (SB3 calls it with the fraction of the run remaining, 1 -> 0; RL Zoo's ``lin_``)."""
    if kind == "constant":
        return value
    from stable_baselines3.common.utils import LinearSchedule

    return LinearSchedule(value, 0.0, 1.0)


def _policy_kwargs(net_arch: tuple[int, ...]) -> dict[str, Any]:
    return {"net_arch": list(net_arch)} if net_arch else {}


def _buffer_size(size: int, config: Config) -> int:
    """A replay never holds more than the run's steps (memory for nothing otherwise)."""
    return int(min(size, config.run.steps + config.agent.baseline.envs))


def _ppo(config: Config) -> dict[str, Any]:
    p = config.agent.baseline.ppo
    return {
        "learning_rate": schedule(p.learning_rate, p.lr_schedule),
        "n_steps": p.n_steps,
        "batch_size": p.batch_size,
        "n_epochs": p.n_epochs,
        "gamma": p.gamma,
        "gae_lambda": p.gae_lambda,
        "clip_range": schedule(p.clip_range, p.clip_schedule),
        "ent_coef": p.ent_coef,
        "vf_coef": p.vf_coef,
        "max_grad_norm": p.max_grad_norm,
        "use_sde": p.use_sde,
        "sde_sample_freq": p.sde_sample_freq,
        "policy_kwargs": _policy_kwargs(p.net_arch),
    }


def _sac(config: Config) -> dict[str, Any]:
    s = config.agent.baseline.sac
    ent_coef: Any = s.ent_coef if s.ent_coef.startswith("auto") else float(s.ent_coef)
    return {
        "learning_rate": schedule(s.learning_rate, s.lr_schedule),
        "buffer_size": _buffer_size(s.buffer_size, config),
        "learning_starts": s.learning_starts,
        "batch_size": s.batch_size,
        "tau": s.tau,
        "gamma": s.gamma,
        "train_freq": s.train_freq,
        "gradient_steps": s.gradient_steps,
        "ent_coef": ent_coef,
        "target_update_interval": s.target_update_interval,
        "use_sde": s.use_sde,
        "sde_sample_freq": s.sde_sample_freq,
        "policy_kwargs": _policy_kwargs(s.net_arch),
    }


def _dqn(config: Config) -> dict[str, Any]:
    d = config.agent.baseline.dqn
    return {
        "learning_rate": schedule(d.learning_rate, d.lr_schedule),
        "buffer_size": _buffer_size(d.buffer_size, config),
        "learning_starts": d.learning_starts,
        "batch_size": d.batch_size,
        "tau": d.tau,
        "gamma": d.gamma,
        "train_freq": d.train_freq,
        "gradient_steps": d.gradient_steps,
        "target_update_interval": d.target_update_interval,
        "exploration_fraction": d.exploration_fraction,
        "exploration_initial_eps": d.exploration_initial_eps,
        "exploration_final_eps": d.exploration_final_eps,
        "max_grad_norm": d.max_grad_norm,
        "policy_kwargs": _policy_kwargs(d.net_arch),
    }


ALGORITHMS: dict[str, Algorithm] = {
    "ppo": Algorithm("PPO", "stable_baselines3:PPO", True, True, False, _ppo),
    "sac": Algorithm("SAC", "stable_baselines3:SAC", False, True, True, _sac),
    "dqn": Algorithm("DQN", "stable_baselines3:DQN", True, False, True, _dqn),
}


def algorithm(kind: str) -> Algorithm:
    """The SB3 algorithm of baseline ``kind``; ConfigError for a kind that is not one."""
    try:
        return ALGORITHMS[kind]
    except KeyError:
        raise ConfigError(
            f"agent.kind={kind!r} is not a model-free baseline ({', '.join(ALGORITHMS)})"
        ) from None


def check_action_space(kind: str, act_space: Space, task: str) -> None:
    """ConfigError when ``kind`` cannot act in ``task``'s action space, naming the
    baselines that can."""
    algo = algorithm(kind)
    if (act_space.discrete and algo.discrete) or (not act_space.discrete and algo.continuous):
        return
    if act_space.discrete:
        what = f"discrete ({act_space.classes} actions)"
    else:
        what = f"continuous {list(act_space.shape)}"
    fits = [k for k, a in ALGORITHMS.items() if (a.discrete if act_space.discrete else a.continuous)]
    needs = "a continuous (Box)" if algo.continuous else "a discrete"
    raise ConfigError(
        f"agent.kind={kind}: {algo.name} needs {needs} action space, and {task}'s actions are "
        f"{what}; use --preset {' or '.join(fits)}"
    )


def build_model(
    config: Config,
    obs_space: Mapping[str, Space],
    act_space: Space,
    env: Any = None,
    device: str | None = None,
) -> Any:
    """The SB3 model ``config`` describes for dreamrl's spaces: trained on ``env`` (a
    VecEnv of :class:`~dreamrl.baselines.env.SB3Env`), or, without one, built for the
    spaces alone to act and be loaded into."""
    kind = config.agent.kind
    algo = algorithm(kind)
    check_action_space(kind, act_space, config.task)
    frames = config.agent.baseline.frame_stack
    kwargs = {
        **algo.settings(config),
        "device": device or config.compute.device,
        "verbose": 0,
    }
    cls = algo.cls()
    if env is not None:
        return cls(policy_name(obs_space), env, **kwargs)
    # No env: build it as SB3's own load does, from the spaces.
    model = cls(policy_name(obs_space), None, _init_setup_model=False, **kwargs)
    model.observation_space = sb3_space(obs_space, frames)
    model.action_space = sb3_action_space(act_space)
    model.n_envs = config.agent.baseline.envs
    model._setup_model()
    return model
