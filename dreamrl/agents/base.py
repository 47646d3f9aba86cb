"""What the training loop, evaluation and checkpoints ask of an agent: :class:`Agent`.

The loop knows nothing else about an agent. It acts through :meth:`Agent.policy` with
the recurrent state carried explicitly, trains through :meth:`Agent.train_step`, and
checkpoints through :meth:`Agent.save` / :meth:`Agent.restore` and the policy-state
tensors. A new agent (another world model, a planner, a model-free baseline) is a new
class with these methods, built by a factory the loop is handed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from dreamrl.config import Config
from dreamrl.spaces import Space


class TrainResult(NamedTuple):
    """The outcome of one train step.

    ``nonfinite`` names what was not finite (loss terms, or ``gradient``) when the update
    was skipped to keep the weights finite; it is empty when the update was applied.
    """

    metrics: dict[str, float]
    nonfinite: tuple[str, ...] = ()

    @property
    def applied(self) -> bool:
        return not self.nonfinite


@runtime_checkable
class Agent(Protocol):
    """An agent as the loop uses it. Its policy state is the agent's own type; the loop
    only passes it back, checkpoints it through :meth:`policy_state_tensors`, and keeps
    the rows of envs still running through :meth:`select_rows`."""

    config: Config
    obs_space: dict[str, Space]
    act_space: Space
    device: torch.device
    updates: int  # updates applied so far: the run's one update counter

    def policy(
        self, obs: Mapping[str, np.ndarray], state: Any, deterministic: bool = False
    ) -> tuple[np.ndarray, Any]:
        """Actions ``[N, ...]`` in dreamrl's env format for step dicts ``{key: [N, ...]}``
        (with ``is_first``), and the next state; ``state=None`` starts every env afresh."""
        ...

    def train_step(self, data: Mapping[str, np.ndarray]) -> TrainResult:
        """One update on a replay batch ``{key: [B, T, ...]}``."""
        ...

    def weights_finite(self) -> bool:
        """Whether every weight is finite (a checkpoint is never written otherwise)."""
        ...

    def param_count(self) -> int: ...

    def save(self, directory: Path) -> None:
        """Write the agent into a checkpoint directory."""
        ...

    def restore(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Take back the state :meth:`save` wrote (its tensors and its JSON meta)."""
        ...

    def policy_state_tensors(self, state: Any) -> dict[str, torch.Tensor]:
        """A policy state as named tensors, for the loop's checkpoint."""
        ...

    def policy_state_from_tensors(self, tensors: Mapping[str, torch.Tensor]) -> Any:
        """The policy state :meth:`policy_state_tensors` wrote, or None if it is absent."""
        ...

    def select_rows(self, state: Any, rows: torch.Tensor) -> Any:
        """The state of the envs ``rows`` only (evaluation drops envs that finished)."""
        ...

    # Optional, and so not a member the isinstance check asks for:
    #   policy_metrics() -> dict[str, float]: what acting has measured since the last call
    #   (an agent that plans: its cost, how far it departs from its actor, how well its
    #   plans came true), reset by reading; read through policy_metrics(agent) below.


class Replica(Protocol):
    """What a data-parallel agent asks of the ranks it trains with
    (:class:`dreamrl.run.distributed.Ranks` implements it)."""

    rank: int  # 0 .. size - 1
    size: int

    def average_gradients(self, params: list[torch.Tensor], finite: bool) -> bool:
        """Replace every parameter's gradient by its mean over the ranks; ``finite`` says
        whether this rank's loss was. Returns whether every rank's was (if not, every rank
        skips the update). Every rank calls it once per update, whatever its loss."""
        ...

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x`` ``[N, ...]`` concatenated in rank order ``[size * N, ...]``."""
        ...

    def broadcast(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's."""
        ...


@runtime_checkable
class DataParallel(Protocol):
    """An agent that can train as one of several replicas, one per rank, that see
    different batches and apply the same averaged update (``dreamrl train --ranks N``)."""

    def join_ranks(self, replica: Replica) -> None:
        """Become replica ``replica.rank``: take rank 0's weights, draw from random streams
        of this rank's own, and average gradients (and whatever batch statistics the
        update uses) over the ranks from now on."""
        ...

    def replica_tensors(self) -> dict[str, torch.Tensor]:
        """The state that differs between replicas (random generators), for this rank's
        part of a checkpoint; what :meth:`Agent.save` writes is rank 0's."""
        ...

    def restore_replica(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Take back what :meth:`replica_tensors` gave."""
        ...


def policy_metrics(agent: Any) -> dict[str, float]:
    """``agent.policy_metrics()``, drained: the metrics its :meth:`Agent.policy` calls
    gathered since the last read (``mpc/*`` for an agent that plans); ``{}`` for an
    agent without the method, which measures nothing while it acts."""
    read = getattr(agent, "policy_metrics", None)
    return dict(read()) if read is not None else {}
