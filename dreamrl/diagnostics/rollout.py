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
from typing import Protocol

import numpy as np
import torch

from dreamrl.nets.rssm import Latent
from dreamrl.world_models.base import Batch

Actions = torch.Tensor | Callable[[Latent], torch.Tensor]


class ModelView(Protocol):
    """What the diagnostics need from a world model. Latents are any objects the view
    understands; ``[B, T]`` lead dims throughout."""

    def observe(self, batch: Batch, generator: torch.Generator) -> tuple[Latent, torch.Tensor]:
        """Posterior states and their log-probs ``[B, T, ...]`` from the real steps."""
        ...

    def imagine(
        self, start: Latent, actions: Actions, generator: torch.Generator, horizon: int
    ) -> tuple[Latent, torch.Tensor]:
        """States ``[B, H, ...]`` reached from ``start [B, ...]`` with only the prior,
        under ``actions [B, H, A]`` (model format) or a policy (a function of the state
        giving ``[B, A]``), and the prior log-probs."""
        ...

    def decode(self, latent: Latent) -> dict[str, torch.Tensor]:
        """Observations predicted from states ``[B, T, ...]``: images in [0, 1] as
        ``[B, T, H, W, C]``, vectors in their own units ``[B, T, D]``."""
        ...

    def reward(self, latent: Latent) -> torch.Tensor:
        """Predicted reward on arriving at each state ``[B, T]``."""
        ...

    def cont(self, latent: Latent) -> torch.Tensor:
        """Predicted probability ``[B, T]`` that the episode goes on (discount folded in)."""
        ...


@dataclass
class Rollout:
    """One open-loop rollout of a batch of windows ``[B, K + H]``."""

    context: int  # K: steps observed
    posterior: Latent  # [B, K + H, ...]: what the real frames say, every step
    post_logits: torch.Tensor  # [B, K + H, C, S]
    imagined: Latent  # [B, H, ...]: steps K .. K+H-1 from the prior alone
    prior_logits: torch.Tensor  # [B, H, C, S]
    recon: dict[str, torch.Tensor]  # [B, K + H, ...]: posterior decodes for the context, imagined after
    reward: torch.Tensor  # [B, H] predicted along the imagined steps
    cont: torch.Tensor  # [B, H]


def latent_index(latent: Latent, sl: slice) -> Latent:
    """Select time steps (dim 1) of a ``[B, T, ...]`` latent."""
    return Latent(latent.deter[:, sl], latent.stoch[:, sl])


@torch.no_grad()
def rollout(
    view: ModelView, batch: Batch, context: int, actions: Actions | None = None, seed: int = 0
) -> Rollout:
    """Observe ``context`` steps of ``batch`` then imagine the rest of its length.

    ``actions [B, H, A]`` (model format), or a policy choosing them from the imagined
    state, replace the recorded actions for the imagined steps: a counterfactual. By
    default the recorded ones are used: the action taken at step t leads to step t+1,
    so the imagined steps follow ``batch.action[:, K-1:-1]``.
    """
    T = batch.is_first.shape[1]
    horizon = T - context
    if context < 1 or horizon < 1:
        raise ValueError(f"need 1 <= context < sequence length, got context {context} of {T}")
    gen = torch.Generator(batch.reward.device).manual_seed(seed)
    posterior, post_logits = view.observe(batch, gen)
    start = Latent(posterior.deter[:, context - 1], posterior.stoch[:, context - 1])
    taken = batch.action[:, context - 1 : T - 1] if actions is None else actions
    if isinstance(taken, torch.Tensor) and taken.shape[1] != horizon:
        raise ValueError(f"actions cover {taken.shape[1]} steps, the horizon is {horizon}")
    imagined, prior_logits = view.imagine(start, taken, gen, horizon)
    observed = view.decode(latent_index(posterior, slice(0, context)))
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
    )


class WorldModelView:
    """:class:`ModelView` of an :class:`~dreamrl.agents.dreamer.DreamerAgent`'s world model."""

    def __init__(self, agent: object):
        self.agent = agent
        self.wm = agent.wm  # type: ignore[attr-defined]
        # The model is asked in the precision it trains and acts in (compute.precision).
        self.precision: Callable[[], contextlib.AbstractContextManager[object]] = getattr(
            agent, "autocast", contextlib.nullcontext
        )

    def observe(self, batch: Batch, generator: torch.Generator) -> tuple[Latent, torch.Tensor]:
        from dreamrl.world_models.rssm import previous_actions

        B = batch.is_first.shape[0]
        with self.precision():
            embed = self.wm.encoder(batch.obs)
            start = self.wm.rssm.initial(B, batch.reward.device)
            observed = self.wm.rssm.observe(
                start, embed, previous_actions(batch.action), batch.is_first, generator
            )
        return observed.posterior, observed.post_logits

    def imagine(
        self, start: Latent, actions: Actions, generator: torch.Generator, horizon: int
    ) -> tuple[Latent, torch.Tensor]:
        with self.precision():
            traj, _ = self.wm.rssm.imagine(start, actions, horizon, generator)
            states = latent_index(traj, slice(1, None))
            return states, self.wm.rssm.prior_logits(states.deter)

    def decode(self, latent: Latent) -> dict[str, torch.Tensor]:
        from dreamrl.nets.distributions import symexp

        B, T = latent.deter.shape[:2]
        with self.precision():
            out = self.wm.decoder(latent.deter.flatten(0, 1), latent.stoch.flatten(0, 1).flatten(-2))
        decoded = {}
        for key, value in out.items():
            value = value.reshape(B, T, *value.shape[1:])
            decoded[key] = value if key in self.wm.decoder.image_keys else symexp(value)
        return decoded

    def reward(self, latent: Latent) -> torch.Tensor:
        with self.precision():
            return self.wm.reward.mean(self.wm.reward(latent.features()))  # type: ignore[no-any-return]

    def cont(self, latent: Latent) -> torch.Tensor:
        with self.precision():
            return torch.sigmoid(self.wm.cont(latent.features()))


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
