"""What every world model offers the agent, the planner and the diagnostics.

A world model turns real experience into a state, rolls that state forward without the
real world, and says what reward and continuation follow. Three members share this
interface (``agent.wm``): the latent RSSM of DreamerV3 (:mod:`.rssm`), the same RSSM
learned without a decoder (:mod:`.decoderfree`), and a one-step pixel predictor with no
recurrent latent (:mod:`.pixel`). The agent, the actor-critic and every diagnostic go
through :class:`WorldModel` alone, so a fourth member is a new subclass and a preset.

A model's *state* is its own type: a NamedTuple or a dict of tensors whose leading
dimensions are the batch (``[N, ...]`` for one step, ``[B, T, ...]`` for sequences).
:func:`map_state` reaches every tensor of one, which is all that the loop, checkpoints
and diagnostics need to slice, stack and store states they do not understand.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import torch
from torch import nn

from dreamrl.config import LossScales
from dreamrl.nets.heads import BinaryHead, TwoHotHead
from dreamrl.spaces import Space

State = Any  # a NamedTuple or a dict of tensors, leading dims the batch
S = TypeVar("S")

# A policy in imagination: features [N, F] -> model-format actions [N, A]; or the actions
# themselves, [N, H, A].
Policy = Callable[[torch.Tensor], torch.Tensor] | torch.Tensor


class Batch(NamedTuple):
    """A training batch of replayed sequences, every tensor ``[B, T, ...]``."""

    obs: dict[str, torch.Tensor]  # images uint8, vectors float32
    action: torch.Tensor  # float [B, T, A]: one-hot or vector, taken after seeing obs t
    reward: torch.Tensor  # float [B, T]: reward received on arriving at obs t
    is_first: torch.Tensor  # bool [B, T]
    is_last: torch.Tensor  # bool [B, T]
    is_terminal: torch.Tensor  # bool [B, T]


class Observation(NamedTuple):
    """States a model reached, ``[B, T, ...]``, and the logits of its latent code there
    (``[B, T, C, S]``; None for a model without a categorical latent)."""

    states: State
    logits: torch.Tensor | None


class WorldModelLoss(NamedTuple):
    """:meth:`WorldModel.loss`: unscaled loss terms ``{name: [B, T]}``, the filtered
    states ``[B, T, ...]`` the behaviour learns from, and float-tensor metrics."""

    losses: dict[str, torch.Tensor]
    states: State
    metrics: dict[str, torch.Tensor]


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: S) -> S:
    """``state`` with ``fn`` applied to each of its tensors (NamedTuple, dict or tensor)."""
    if isinstance(state, torch.Tensor):
        return fn(state)  # type: ignore[return-value]
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}  # type: ignore[return-value]
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(map_state(fn, v) for v in state))
    raise TypeError(f"a model state holds tensors in NamedTuples and dicts, not {type(state).__name__}")


def state_items(state: State, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of ``state`` by dotted name (``deter``, ``frames.image``, ...)."""
    if isinstance(state, torch.Tensor):
        return {prefix.rstrip("."): state}
    pairs: Any = state.items() if isinstance(state, dict) else zip(state._fields, state)
    out: dict[str, torch.Tensor] = {}
    for key, value in pairs:
        out.update(state_items(value, f"{prefix}{key}."))
    return out


def state_from_items(template: S, items: Mapping[str, torch.Tensor], prefix: str = "") -> S:
    """The state shaped like ``template`` whose tensors :func:`state_items` named ``items``."""
    if isinstance(template, torch.Tensor):
        return items[prefix.rstrip(".")]  # type: ignore[return-value]
    if isinstance(template, dict):
        return {k: state_from_items(v, items, f"{prefix}{k}.") for k, v in template.items()}  # type: ignore[return-value]
    fields: tuple[str, ...] = template._fields  # type: ignore[attr-defined]
    values: Any = template
    return type(template)(*(state_from_items(v, items, f"{prefix}{k}.") for k, v in zip(fields, values)))


def stack_states(states: list[S], dim: int = 1) -> S:
    """Per-step states ``[N, ...]`` stacked into ``[N, T, ...]`` (``dim=1``)."""
    first = states[0]
    items = [state_items(s) for s in states]
    return state_from_items(first, {k: torch.stack([i[k] for i in items], dim) for k in items[0]})


class WorldModel(nn.Module, ABC):
    """A learned model of the environment, as the agent and the diagnostics use it.

    Every member has a reward head ``reward`` and a continue head ``cont`` reading its
    features ``[..., feat_dim]``; the reward at a state is the one received on arriving
    there, and the continue probability has the discount folded in (``agent.contdisc``).
    """

    feat_dim: int
    reward: TwoHotHead
    cont: BinaryHead
    # The observation keys :meth:`decode` predicts (empty: it predicts none).
    decoded_spaces: dict[str, Space]
    # True when :meth:`decode` is a probe trained on stopped latents: it shows what the
    # states hold but never shaped them (the report labels its pictures so).
    decode_is_probe: bool = False

    # ------------------------------------------------------------------ states

    @abstractmethod
    def initial(self, batch: int, device: torch.device | str) -> State:
        """The state before anything is observed, ``[batch, ...]``."""

    @abstractmethod
    def features(self, state: State) -> torch.Tensor:
        """What the heads, the actor and the critic read: ``[..., feat_dim]``."""

    def codes(self, state: State) -> torch.Tensor | None:
        """One-hot latent codes ``[..., C, S]`` (latent usage and drift), or None."""
        return None

    # ------------------------------------------------------------------ real steps

    @abstractmethod
    def observe_step(
        self,
        state: State,
        prev_action: torch.Tensor,
        obs: Mapping[str, torch.Tensor],
        is_first: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> State:
        """One step for acting: ``prev_action [N, A]`` (model format), ``obs {key: [N, ...]}``,
        ``is_first [N]`` (starts afresh). Returns the state ``[N, ...]``."""

    @abstractmethod
    def observe(self, batch: Batch, generator: torch.Generator | None = None) -> Observation:
        """The states ``[B, T, ...]`` after each real step of ``batch`` (from a fresh start)."""

    @abstractmethod
    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> WorldModelLoss:
        """The model's loss terms on ``batch`` (see :meth:`loss_scales` for their names)."""

    @abstractmethod
    def loss_scales(self, scales: LossScales) -> dict[str, float]:
        """The weight of each of :meth:`loss`'s terms, from ``agent.loss_scales``."""

    def agc_groups(self) -> list[list[torch.Tensor]]:
        """Parameters whose gradients are clipped by one joint norm (one tensor upstream)."""
        return []

    # ------------------------------------------------------------------ imagination

    @abstractmethod
    def imagine(
        self,
        start: State,
        policy: Policy,
        horizon: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Roll ``horizon`` steps on from ``start [N, ...]`` with the model alone.

        ``policy`` maps features ``[N, F]`` to actions ``[N, A]``, or is the actions
        ``[N, H, A]``. Returns the features ``[N, H+1, F]`` (the start's first; in
        ``dtype``, by default the model's) and the actions ``[N, H, A]`` taken."""

    @abstractmethod
    def imagine_states(
        self, start: State, policy: Policy, horizon: int, generator: torch.Generator | None = None
    ) -> Observation:
        """:meth:`imagine` returning the states ``[N, H, ...]`` reached (the start not
        among them) and their predicted code logits, for the diagnostics."""

    def decode(self, states: State) -> dict[str, torch.Tensor]:
        """Observations predicted at states ``[B, T, ...]``: images in [0, 1] as
        ``[B, T, H, W, C]``, vectors in their own units ``[B, T, D]``; the keys of
        :attr:`decoded_spaces` (none by default)."""
        return {}

    # ------------------------------------------------------------------ heads

    def predicted_reward(self, state: State) -> torch.Tensor:
        """Expected reward ``[...]`` on arriving at each state."""
        return self.reward.mean(self.reward(self.features(state)))

    def predicted_continue(self, state: State) -> torch.Tensor:
        """Probability ``[...]`` that the episode goes on after each state (discounted)."""
        return torch.sigmoid(self.cont(self.features(state)))
