"""FLOPs per env step of a model-free baseline, counted on its own first update.

A Dreamer run's FLOPs are counted afterwards on its checkpoint (``dreamrl.compare.costs``),
with a replay-shaped batch. A baseline's update is SB3's ``train()``, whose work depends on
the algorithm (PPO's epochs over a whole rollout, DQN's and SAC's gradient steps per
``train_freq``), so it is counted where it happens: :class:`UpdateFlops` runs the first
``train()`` call of a session under ``torch.utils.flop_counter`` (the same update, only
counted) and divides by the env steps of the rollout that call learns from. One policy
step for one env (the deterministic action, as ``compare.costs`` counts Dreamer's) is
added. The callback logs the figure as ``cost/gflop_per_env_step``, which ``compare``
reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from dreamrl.flops import counted


@dataclass(frozen=True)
class FlopCount:
    """One counted update: its FLOPs, the env steps of the rollout it learned from, and the
    FLOPs of one policy step for one env."""

    update: int
    rollout_steps: int
    policy_step: int

    @property
    def per_env_step(self) -> float:
        return self.update / self.rollout_steps + self.policy_step

    def metrics(self) -> dict[str, float]:
        return {
            "cost/gflop_per_env_step": self.per_env_step / 1e9,
            "cost/gflop_per_update_call": self.update / 1e9,
            "cost/gflop_per_policy_step": self.policy_step / 1e9,
        }


def one_row(obs: Any) -> Any:
    """The first env's observation of SB3's vectorised ``_last_obs`` (an array or a dict)."""
    if isinstance(obs, dict):
        return {k: v[:1] for k, v in obs.items()}
    return obs[:1]


class UpdateFlops:
    """Counts the first ``train()`` call of an SB3 model after it is installed, then steps
    aside (later calls run as they are).

    ``rollout_start`` gives the model's ``num_timesteps`` when the rollout before the
    call began (the callback's ``_on_rollout_start`` records it); ``report`` receives the
    :class:`FlopCount`. A call after an empty rollout is not counted; the next one is.
    SB3's ``save`` pickles the model's attributes, so saving goes through :meth:`detached`.
    """

    def __init__(self, model: Any, rollout_start: Callable[[], int], report: Callable[[FlopCount], None]):
        self.model, self.rollout_start, self.report = model, rollout_start, report
        self.train = model.train
        self.done = False
        self._install()

    def _install(self) -> None:
        self.model.train = self  # SB3's learn calls self.train(...): the instance attribute wins

    def _uninstall(self) -> None:
        vars(self.model).pop("train", None)  # the class's own train again

    @contextlib.contextmanager
    def detached(self) -> Iterator[None]:
        """The model as SB3 built it, for the duration (a save), then counting again."""
        self._uninstall()
        try:
            yield
        finally:
            if not self.done:
                self._install()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        steps = int(self.model.num_timesteps) - int(self.rollout_start())
        if self.done or steps <= 0:
            return self.train(*args, **kwargs)
        result, update = counted(lambda: self.train(*args, **kwargs))
        self.done = True
        self._uninstall()
        self.report(FlopCount(update, steps, self.policy_step()))
        return result

    def policy_step(self) -> int:
        """FLOPs of the deterministic action for one env's last observation (no sampling,
        so no random number is drawn and training goes on as it would)."""
        obs = one_row(self.model._last_obs)
        with torch.no_grad():
            _, flops = counted(lambda: self.model.predict(obs, deterministic=True))
        return flops
