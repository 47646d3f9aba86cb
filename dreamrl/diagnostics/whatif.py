"""Counterfactuals: "what if I had acted differently from step t?"

From the model's state at step ``t`` of a recorded episode (after observing steps
0..t), the world model rolls forward twice from the same state with the same random
draws: under the actions really taken (the factual branch, which is exactly the
open-loop prediction of :func:`~dreamrl.diagnostics.rollout.rollout`) and under other
actions (the counterfactual branch). Both are compared with what really happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dreamrl.diagnostics.rollout import Rollout, WorldModelView, rollout


@dataclass
class Branch:
    """Predicted (or real) rewards and continues along one branch, ``[H]`` each."""

    rewards: list[float]
    continues: list[float]
    frames: dict[str, np.ndarray]  # predicted observations [H, ...] (real ones for the real branch)

    @property
    def total(self) -> float:
        """Rewards summed while the episode is predicted to go on (continue > 0.5)."""
        alive = np.cumprod([1.0] + [float(c > 0.5) for c in self.continues[:-1]])
        return float(np.sum(np.asarray(self.rewards) * alive))

    def as_dict(self) -> dict[str, Any]:
        return {"rewards": self.rewards, "continues": self.continues, "return": self.total}


@dataclass
class WhatIf:
    t: int
    horizon: int
    description: str
    factual: Branch
    counterfactual: Branch
    real: Branch

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "horizon": self.horizon,
            "actions": self.description,
            "factual": self.factual.as_dict(),
            "counterfactual": self.counterfactual.as_dict(),
            "real": self.real.as_dict(),
        }


def model_actions(agent: Any, actions: np.ndarray) -> torch.Tensor:
    """Env-format actions ``[H]`` (indices) or ``[H, A]`` to model format ``[1, H, A]``."""
    space = agent.act_space
    tensor = torch.as_tensor(np.asarray(actions), device=agent.device)
    if space.discrete:
        tensor = torch.nn.functional.one_hot(tensor.long(), space.classes).float()
    else:
        tensor = tensor.float().reshape(len(actions), -1).clamp(-1, 1)
    return tensor[None]


def _branch(r: Rollout, reward_true: np.ndarray | None = None) -> Branch:
    frames = {k: v[0, r.context :].cpu().numpy() for k, v in r.recon.items()}
    return Branch(r.reward[0].tolist(), r.cont[0].tolist(), frames)


def whatif(
    agent: Any,
    episode: dict[str, np.ndarray],
    t: int,
    actions: np.ndarray | str,
    horizon: int = 15,
    description: str = "",
    seed: int = 0,
) -> WhatIf:
    """Roll the world model forward from step ``t`` of ``episode`` (arrays ``[T, ...]``
    as :func:`~dreamrl.run.evaluate.evaluate` records them) under the recorded actions
    and under ``actions``: env-format actions (at least ``horizon`` of them), or
    ``"policy"`` for the agent's own actor choosing in imagination (its mode).
    ``horizon`` steps, or to the episode's end."""
    length = len(episode["reward"])
    if not 0 <= t < length - 1:
        raise ValueError(f"t={t} must leave at least one step of the {length}-step episode after it")
    horizon = min(horizon, length - 1 - t)
    window = {k: v[None, : t + 1 + horizon] for k, v in episode.items()}
    batch = agent.to_batch(window)
    view = WorldModelView(agent)
    factual = rollout(view, batch, t + 1, seed=seed)
    if isinstance(actions, str):
        if actions != "policy":
            raise ValueError(f"actions {actions!r}: give an array of actions or 'policy'")

        def policy(features: torch.Tensor) -> torch.Tensor:
            return agent.ac.actor(features).mode()  # type: ignore[no-any-return]

        other = rollout(view, batch, t + 1, policy, seed=seed)
    else:
        other = rollout(view, batch, t + 1, model_actions(agent, np.asarray(actions)[:horizon]), seed=seed)
    real_frames = {k: episode[k][t + 1 : t + 1 + horizon] for k in agent.obs_space}
    real_cont = (1.0 - episode["is_terminal"][t + 1 : t + 1 + horizon].astype(np.float32)).tolist()
    real = Branch(episode["reward"][t + 1 : t + 1 + horizon].tolist(), real_cont, real_frames)
    return WhatIf(t, horizon, description, _branch(factual), _branch(other), real)


def whatif_picture(result: WhatIf, image_keys: list[str]) -> bytes:
    """PNG: real frames, the factual and the counterfactual prediction, one strip each
    (image observations), or the three branches' rewards as curves (vectors only)."""
    from dreamrl.diagnostics.images import curves_png, frame_strip, png_bytes

    if image_keys:
        key = image_keys[0]
        real = result.real.frames[key]
        to8 = lambda x: np.clip(x * 255.0, 0, 255).astype(np.uint8)  # noqa: E731
        strips = [
            frame_strip(real, 0),
            frame_strip(to8(result.factual.frames[key]), 0),
            frame_strip(to8(result.counterfactual.frames[key]), 0),
        ]
        gap = np.full((6, strips[0].shape[1], 3), 255, np.uint8)
        return png_bytes(np.concatenate([strips[0], gap, strips[1], gap, strips[2]], 0))
    return curves_png(
        f"What if, from step {result.t}: rewards",
        {
            "real": np.asarray(result.real.rewards),
            "predicted, actions taken": np.asarray(result.factual.rewards),
            f"predicted, {result.description or 'other actions'}": np.asarray(result.counterfactual.rewards),
        },
        xlabel=f"steps after step {result.t}",
    )
