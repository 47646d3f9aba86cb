"""Open-loop rollouts: observe K real steps, then imagine H steps under given actions.

This is the one code path behind every diagnostic and every counterfactual, so that
"what if" under the actions that were really taken reproduces the open-loop prediction
exactly (same inputs, same seeded generator, same numbers).

The model is reached through :class:`ModelView`, a handful of methods, so the maths of
the diagnostics can be tested on a hand-made model whose errors are known (an exact
one, and a wrong one whose errors grow with the horizon).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from dreamrl.world_models.base import Batch, Observation, Policy, State, map_state


class ModelView(Protocol):
    """What the diagnostics need from a world model. States are any objects the view
    understands, NamedTuples or dicts of tensors; ``[B, T]`` lead dims throughout."""

    def observe(self, batch: Batch, generator: torch.Generator) -> Observation:
        """Posterior states ``[B, T, ...]`` from the real steps, and their code logits."""
        ...

    def imagine(self, start: State, actions: Policy, generator: torch.Generator, horizon: int) -> Observation:
        """States ``[B, H, ...]`` reached from ``start [B, ...]`` by the model alone,
        under ``actions [B, H, A]`` (model format) or a policy (a function of the
        features giving ``[B, A]``), and their predicted code logits."""
        ...

    def decode(self, states: State) -> dict[str, torch.Tensor]:
        """Observations predicted from states ``[B, T, ...]``: images in [0, 1] as
        ``[B, T, H, W, C]``, vectors in their own units ``[B, T, D]``."""
        ...

    def reward(self, states: State) -> torch.Tensor:
        """Predicted reward on arriving at each state ``[B, T]``."""
        ...

    def cont(self, states: State) -> torch.Tensor:
        """Predicted probability ``[B, T]`` that the episode goes on (discount folded in)."""
        ...

    def codes(self, states: State) -> torch.Tensor | None:
        """One-hot latent codes ``[B, T, C, S]`` of the states, or None (no categorical latent)."""
        ...


@dataclass
class Rollout:
    """One open-loop rollout of a batch of windows ``[B, K + H]``."""

    context: int  # K: steps observed
    posterior: State  # [B, K + H, ...]: what the real frames say, every step
    post_logits: torch.Tensor | None  # [B, K + H, C, S] (None: no categorical latent)
    imagined: State  # [B, H, ...]: steps K .. K+H-1 from the model alone
    prior_logits: torch.Tensor | None  # [B, H, C, S]
    recon: dict[str, torch.Tensor]  # [B, K + H, ...]: posterior decodes for the context, imagined after
    reward: torch.Tensor  # [B, H] predicted along the imagined steps
    cont: torch.Tensor  # [B, H]
    post_codes: torch.Tensor | None = None  # [B, K + H, C, S] one-hot
    imagined_codes: torch.Tensor | None = None  # [B, H, C, S] one-hot
    probe: bool = False  # recon comes from a probe decoder that never shaped the model


def time_slice(state: State, sl: slice | int) -> State:
    """Select time steps (dim 1) of a ``[B, T, ...]`` state."""
    return map_state(lambda t: t[:, sl], state)


@torch.no_grad()
def rollout(
    view: ModelView, batch: Batch, context: int, actions: Policy | None = None, seed: int = 0
) -> Rollout:
    """Observe ``context`` steps of ``batch`` then imagine the rest of its length.

    ``actions [B, H, A]`` (model format), or a policy choosing them from the imagined
    features, replace the recorded actions for the imagined steps: a counterfactual. By
    default the recorded ones are used: the action taken at step t leads to step t+1,
    so the imagined steps follow ``batch.action[:, K-1:-1]``.
    """
    T = batch.is_first.shape[1]
    horizon = T - context
    if context < 1 or horizon < 1:
        raise ValueError(f"need 1 <= context < sequence length, got context {context} of {T}")
    gen = torch.Generator(batch.reward.device).manual_seed(seed)
    posterior, post_logits = view.observe(batch, gen)
    start = time_slice(posterior, context - 1)
    taken = batch.action[:, context - 1 : T - 1] if actions is None else actions
    if isinstance(taken, torch.Tensor) and taken.shape[1] != horizon:
        raise ValueError(f"actions cover {taken.shape[1]} steps, the horizon is {horizon}")
    imagined, prior_logits = view.imagine(start, taken, gen, horizon)
    observed = view.decode(time_slice(posterior, slice(0, context)))
    dreamed = view.decode(imagined)
    recon = {k: torch.cat([observed[k], dreamed[k]], 1) for k in observed}
    return Rollout(
        context,
        posterior,
        post_logits,
        imagined,
        prior_logits,
        recon,
        view.reward(imagined),
        view.cont(imagined),
        view.codes(posterior),
        view.codes(imagined),
        bool(getattr(view, "probe", False)),
    )


class WorldModelView:
    """:class:`ModelView` of an agent's world model (any :class:`~dreamrl.world_models.base.WorldModel`),
    asked in the precision the agent trains and acts in (``compute.precision``)."""

    def __init__(self, agent: Any):
        self.agent = agent
        self.wm = agent.wm
        self.probe = bool(self.wm.decode_is_probe)
        self.precision: Callable[[], contextlib.AbstractContextManager[object]] = getattr(
            agent, "autocast", contextlib.nullcontext
        )

    def observe(self, batch: Batch, generator: torch.Generator) -> Observation:
        with self.precision():
            return self.wm.observe(batch, generator)  # type: ignore[no-any-return]

    def imagine(self, start: State, actions: Policy, generator: torch.Generator, horizon: int) -> Observation:
        with self.precision():
            return self.wm.imagine_states(start, actions, horizon, generator)  # type: ignore[no-any-return]

    def decode(self, states: State) -> dict[str, torch.Tensor]:
        with self.precision():
            return self.wm.decode(states)  # type: ignore[no-any-return]

    def reward(self, states: State) -> torch.Tensor:
        with self.precision():
            return self.wm.predicted_reward(states)  # type: ignore[no-any-return]

    def cont(self, states: State) -> torch.Tensor:
        with self.precision():
            return self.wm.predicted_continue(states)  # type: ignore[no-any-return]

    def codes(self, states: State) -> torch.Tensor | None:
        return self.wm.codes(states)  # type: ignore[no-any-return]


def windows(
    episodes: list[dict[str, np.ndarray]], length: int, count: int, seed: int = 0
) -> dict[str, np.ndarray] | None:
    """Up to ``count`` windows ``{key: [N, length, ...]}`` lying inside single episodes,
    spread evenly over the episodes long enough to hold one (None if none is)."""
    rng = np.random.default_rng(seed)
    usable = [ep for ep in episodes if len(ep["reward"]) >= length]
    if not usable:
        return None
    picks = []
    for n in range(count):
        ep = usable[n % len(usable)]
        start = int(rng.integers(0, len(ep["reward"]) - length + 1))
        picks.append({k: v[start : start + length] for k, v in ep.items()})
    out = {k: np.stack([p[k] for p in picks]) for k in picks[0]}
    out["is_first"] = out["is_first"].copy()
    out["is_first"][:, 0] = True  # every window starts the model afresh
    return out
