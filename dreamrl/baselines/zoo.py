"""RL Zoo's tuned hyperparameters for the baselines, as dreamrl config keys.

RL Baselines3 Zoo (DLR-RM/rl-baselines3-zoo, ``hyperparams/{ppo,sac,dqn}.yml``) publishes
settings tuned per environment for stable-baselines3's algorithms. Where it has an entry
for a task and the observations it was tuned on, :func:`tuned` gives that entry; the
config builder puts it under every preset and override (:func:`dreamrl.config.build_config`),
so it replaces only SB3's defaults. Zoo's ``n_timesteps`` becomes ``run.steps`` (its linear
schedules run out there), ``n_envs`` ``agent.baseline.envs``, ``frame_stack``
``agent.baseline.frame_stack``, a ``lin_X`` value X with a ``linear`` schedule.

What is left out, and why: Zoo's Atari entries wrap the env in SB3's ``AtariWrapper``;
dreamrl's Atari adapter does its own preprocessing (``env.atari.*``), the same as the
Dreamer run sees, so only the algorithm's settings are taken. ``optimize_memory_usage``
(DQN on Atari) is not taken: SB3 refuses it beside the timeout handling dreamrl's time
limits need.
"""

from __future__ import annotations

from typing import Any

Preset = dict[str, Any]

_PPO = "agent.baseline.ppo."
_SAC = "agent.baseline.sac."
_DQN = "agent.baseline.dqn."

# kind -> Zoo's env key -> settings. Classic-control entries were tuned on the env's state
# vectors; "atari" on frames (any atari:<game>).
ZOO: dict[str, dict[str, Preset]] = {
    "ppo": {
        "CartPole-v1": {
            "run.steps": 100_000,
            "agent.baseline.envs": 8,
            _PPO + "n_steps": 32,
            _PPO + "batch_size": 256,
            _PPO + "gae_lambda": 0.8,
            _PPO + "gamma": 0.98,
            _PPO + "n_epochs": 20,
            _PPO + "ent_coef": 0.0,
            _PPO + "learning_rate": 1e-3,
            _PPO + "lr_schedule": "linear",
            _PPO + "clip_range": 0.2,
            _PPO + "clip_schedule": "linear",
        },
        "Pendulum-v1": {
            "run.steps": 100_000,
            "agent.baseline.envs": 4,
            _PPO + "n_steps": 1024,
            _PPO + "gae_lambda": 0.95,
            _PPO + "gamma": 0.9,
            _PPO + "n_epochs": 10,
            _PPO + "ent_coef": 0.0,
            _PPO + "learning_rate": 1e-3,
            _PPO + "clip_range": 0.2,
            _PPO + "use_sde": True,
            _PPO + "sde_sample_freq": 4,
        },
        "atari": {
            "run.steps": 10_000_000,
            "agent.baseline.envs": 8,
            "agent.baseline.frame_stack": 4,
            _PPO + "n_steps": 128,
            _PPO + "n_epochs": 4,
            _PPO + "batch_size": 256,
            _PPO + "learning_rate": 2.5e-4,
            _PPO + "lr_schedule": "linear",
            _PPO + "clip_range": 0.1,
            _PPO + "clip_schedule": "linear",
            _PPO + "vf_coef": 0.5,
            _PPO + "ent_coef": 0.01,
        },
    },
    "sac": {
        "Pendulum-v1": {
            "run.steps": 20_000,
            _SAC + "learning_rate": 1e-3,
        },
    },
    "dqn": {
        "CartPole-v1": {
            "run.steps": 50_000,
            _DQN + "learning_rate": 2.3e-3,
            _DQN + "batch_size": 64,
            _DQN + "buffer_size": 100_000,
            _DQN + "learning_starts": 1000,
            _DQN + "gamma": 0.99,
            _DQN + "target_update_interval": 10,
            _DQN + "train_freq": 256,
            _DQN + "gradient_steps": 128,
            _DQN + "exploration_fraction": 0.16,
            _DQN + "exploration_final_eps": 0.04,
            _DQN + "net_arch": (256, 256),
        },
        "atari": {
            "run.steps": 10_000_000,
            "agent.baseline.frame_stack": 4,
            _DQN + "buffer_size": 10_000,
            _DQN + "learning_rate": 1e-4,
            _DQN + "batch_size": 32,
            _DQN + "learning_starts": 100_000,
            _DQN + "target_update_interval": 1000,
            _DQN + "train_freq": 4,
            _DQN + "gradient_steps": 1,
            _DQN + "exploration_fraction": 0.1,
            _DQN + "exploration_final_eps": 0.01,
        },
    },
}


def zoo_key(task: str, pixels: bool) -> str | None:
    """The Zoo env key whose settings fit ``task`` with these observations: ``atari`` for
    any Atari game; the gymnasium id itself from state vectors; none from rendered
    pixels, which the Zoo never tuned a classic-control env on."""
    if task.startswith("atari:"):
        return "atari"
    return None if pixels else task


def tuned(kind: str, task: str, pixels: bool = False) -> Preset:
    """RL Zoo's settings for agent ``kind`` on ``task`` (``{}`` where it has none)."""
    key = zoo_key(task, pixels)
    return dict(ZOO.get(kind, {}).get(key, {})) if key is not None else {}
