"""A trained stable-baselines3 model behind dreamrl's :class:`~dreamrl.agents.base.Agent`
protocol: it acts in dreamrl's evaluation, saves into a checkpoint dir, and loads back.

The checkpoint holds the model in SB3's own format (``model.zip``: a user can
``PPO.load`` it), an off-policy model's replay buffer as plain arrays
(:mod:`.buffer`), and ``agent.json``. Loading reads none of the zip's pickled parts:
the model is rebuilt from the config in ``agent.json`` and only the zip's weight files
are read, by torch's weights-only loader, so nothing in a checkpoint runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamrl.agents.base import TrainResult
from dreamrl.agents.meta import agent_meta, read_agent_meta
from dreamrl.baselines.algorithms import algorithm, build_model
from dreamrl.baselines.buffer import restore_buffer, save_buffer
from dreamrl.baselines.observations import FrameStack, as_sb3
from dreamrl.config import Config, ConfigError
from dreamrl.envs.convert import ActionConverter, ObsConverter, model_observation
from dreamrl.rundir import AGENT_META, BASELINE_MODEL, BASELINE_REPLAY
from dreamrl.spaces import Space

AGENT_FORMAT = 1


class BaselineAgent:
    """An SB3 model (PPO, SAC or DQN) as dreamrl's evaluation and checkpoints use an agent.

    Its policy state is the :class:`~dreamrl.baselines.observations.FrameStack` of the
    envs it acts in (the last ``agent.baseline.frame_stack`` observations). It trains only
    inside SB3's ``learn`` (:mod:`dreamrl.baselines.train`), never through
    :meth:`train_step`."""

    def __init__(
        self,
        config: Config,
        obs_space: Mapping[str, Space],
        act_space: Space,
        model: Any,
        obs_converter: ObsConverter | None = None,
        act_converter: ActionConverter | None = None,
    ):
        self.config = config
        self.obs_space = dict(obs_space)
        self.act_space = act_space
        self.model = model
        self.obs_converter = obs_converter
        self.act_converter = act_converter
        self.device: torch.device = torch.device(model.device)

    @property
    def kind(self) -> str:
        return self.config.agent.kind

    @property
    def updates(self) -> int:
        """SB3's update count: gradient steps for SAC and DQN, epochs over a rollout for PPO."""
        return int(self.model._n_updates)

    @updates.setter
    def updates(self, value: int) -> None:
        self.model._n_updates = int(value)

    # ------------------------------------------------------------------ acting

    def policy(
        self, obs: Mapping[str, np.ndarray], state: FrameStack | None, deterministic: bool = False
    ) -> tuple[np.ndarray, FrameStack]:
        """Actions ``[N]`` int32 or ``[N, A]`` in [-1, 1] for step dicts ``{key: [N, ...]}``."""
        frames = self.config.agent.baseline.frame_stack
        stack = state if state is not None else FrameStack(self.obs_space, frames)
        stacked = stack.observe({k: obs[k] for k in self.obs_space}, np.asarray(obs["is_first"]))
        actions, _ = self.model.predict(as_sb3(stacked), deterministic=deterministic)
        n = len(obs["is_first"])
        if self.act_space.discrete:
            return np.asarray(actions).reshape(n).astype(np.int32), stack
        return np.asarray(actions, np.float32).reshape(n, *self.act_space.shape), stack

    def act(
        self, obs: Any, state: FrameStack | None = None, deterministic: bool = True
    ) -> tuple[Any, FrameStack]:
        """One env's action for one observation as your gymnasium env returns it (for an
        env trained with ``env.pixels=true``, ``env.render()``), or a dict of dreamrl's
        observation keys; ``state=None`` starts an episode. Returns ``(env_action, state)``."""
        model_obs = model_observation(obs, self.obs_space, self.obs_converter)
        batch = {k: v[None] for k, v in model_obs.items()}
        batch["is_first"] = np.array([state is None])
        actions, state = self.policy(batch, state, deterministic)
        action = actions[0]
        return (self.act_converter(action) if self.act_converter is not None else action), state

    def select_rows(self, state: FrameStack, rows: torch.Tensor) -> FrameStack:
        return state.rows(rows.cpu().numpy())

    def policy_state_tensors(self, state: FrameStack) -> dict[str, torch.Tensor]:
        return {f"policy.{k}": torch.from_numpy(v.copy()) for k, v in state.stack.items()}

    def policy_state_from_tensors(self, tensors: Mapping[str, torch.Tensor]) -> FrameStack | None:
        stack = {k[len("policy.") :]: v.numpy() for k, v in tensors.items() if k.startswith("policy.")}
        if not stack:
            return None
        return FrameStack(self.obs_space, self.config.agent.baseline.frame_stack, stack)

    # ------------------------------------------------------------------ training

    def train_step(self, data: Mapping[str, np.ndarray]) -> TrainResult:
        """Not how a baseline trains: SB3's ``learn`` runs its updates on SB3's own buffers."""
        raise TypeError(
            f"a {self.kind} baseline trains inside stable-baselines3's learn() "
            "(dreamrl.baselines.train), not on dreamrl's replay batches"
        )

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.policy.parameters())

    def param_count(self) -> int:
        """Trainable parameters of the policy (actor and critics; target networks excluded)."""
        named = self.model.policy.named_parameters()
        return sum(p.numel() for name, p in named if p.requires_grad and "target" not in name)

    # ------------------------------------------------------------------ saving

    def meta(self, replay_steps: int = 0) -> dict[str, Any]:
        import stable_baselines3

        return {
            **agent_meta(self, AGENT_FORMAT),
            "stable_baselines3": stable_baselines3.__version__,
            "kind": self.kind,
            "num_timesteps": int(self.model.num_timesteps),
            "episode_num": int(self.model._episode_num),
            "replay_steps": replay_steps,
        }

    def save(self, directory: Path) -> None:
        """Write ``model.zip``, the replay buffer (off-policy) and ``agent.json``."""
        from dreamrl.run.checkpoint import write_manifest

        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / BASELINE_MODEL)
        replay_steps = 0
        if algorithm(self.kind).replay:
            replay_steps = save_buffer(self.model.replay_buffer, directory / BASELINE_REPLAY)
        (directory / AGENT_META).write_text(json.dumps(self.meta(replay_steps), indent=1))
        write_manifest(directory)

    def restore(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Not how a baseline comes back: its weights are in ``model.zip``, which
        :meth:`restore_dir` reads."""
        raise TypeError(f"a {self.kind} baseline is restored from its checkpoint dir (restore_dir)")

    def restore_dir(self, directory: Path, replay: bool = True) -> int:
        """Take back what :meth:`save` wrote into ``directory``: weights and optimiser
        states, counters, and with ``replay`` the replay buffer; the replay steps restored."""
        from stable_baselines3.common.save_util import load_from_zip_file, recursive_setattr

        meta = json.loads((directory / AGENT_META).read_text())
        # load_data=False: the zip's pickled "data" entry is never read; its .pth files load
        # through torch's weights-only loader.
        _, params, variables = load_from_zip_file(
            directory / BASELINE_MODEL, device=self.model.device, load_data=False
        )
        self.model.set_parameters(params, exact_match=True, device=self.model.device)
        for name, value in (variables or {}).items():
            if value is not None:  # SAC's learned entropy coefficient, as SB3's own load sets it
                recursive_setattr(self.model, f"{name}.data", value.data)
        if getattr(self.model, "use_sde", False):
            self.model.policy.reset_noise()
        self.model.num_timesteps = int(meta["num_timesteps"])
        self.model._episode_num = int(meta["episode_num"])
        self.updates = int(meta["updates"])
        if replay and algorithm(self.kind).replay and (directory / BASELINE_REPLAY).is_file():
            return restore_buffer(self.model.replay_buffer, directory / BASELINE_REPLAY)
        return 0

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device | None = None, act: str | None = None
    ) -> BaselineAgent:
        """Load from a checkpoint dir, or a run dir's newest checkpoint, to act (the replay
        buffer is left out). ``act`` may only be ``actor``: a baseline has no world model
        to plan in."""
        from dreamrl.run.checkpoint import read_newest

        return read_newest(Path(path), lambda directory: cls._load_dir(directory, device, act))

    @classmethod
    def _load_dir(cls, directory: Path, device: str | torch.device | None, act: str | None) -> BaselineAgent:
        meta = read_agent_meta(directory, AGENT_FORMAT)
        config = meta.config
        if act not in (None, "actor"):
            raise ConfigError(
                f"--act {act}: {directory} holds a {config.agent.kind} baseline, which acts by its own "
                "policy; only a world-model agent plans"
            )
        obs_space, act_space = meta.obs_space, meta.act_space
        model = build_model(config, obs_space, act_space, device=None if device is None else str(device))
        agent = cls(config, obs_space, act_space, model, meta.obs_converter, meta.act_converter)
        agent.restore_dir(directory, replay=False)
        return agent
