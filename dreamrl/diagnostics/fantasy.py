"""The fantasy gap: the return the model promises against the return that really followed.

The lesson's symptom of a huge imagination horizon over weak dynamics is "the actor
learns fantasy": it learns to reach returns that exist only in the model. Measured here
on real evaluation episodes (never trained on), at states the model reached by observing
each episode from its start:

- ``imagined[h]``: the λ-return the agent computes for its policy from that state, as it
  does in training: ``h`` steps imagined under the policy (its mode, as evaluation acts,
  unless ``run.eval_sample``), predicted rewards and continues, bootstrapped from the
  critic after ``h`` steps (the slow critic under ``agent.imag_loss.slowtar``);
- ``real``: the discounted return that really followed, ``G_t = r_{t+1} + γ (1 -
  terminal_{t+1}) G_{t+1}`` with ``γ = 1 - 1/agent.horizon``, to the episode's end. An
  episode that did not end in a terminal state (a time limit, the evaluation's cut, the
  recording's) is bootstrapped with the critic's value at its last state: a time limit is
  not an end the model could have known of;
- ``gap[h] = mean(imagined[h] - real)`` over the starts: positive when the model promises
  more than the world gives. ``abs_gap`` is the mean absolute difference.

An agent that acts by planning (``agent.act=mpc``) is measured with its actor. The maths is
in pure functions (:func:`discounted_returns`, :func:`imagined_returns`, :func:`gap_summary`)
with hand-computed tests; :func:`fantasy_gap` applies them to an agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dreamrl.behaviors.actor_critic import imagined_continue, lambda_return
from dreamrl.diagnostics.rollout import WorldModelView
from dreamrl.world_models.base import State, map_state

BASE_HORIZONS = (1, 5, 15)


def fantasy_horizons(imag_length: int) -> tuple[int, ...]:
    """The horizons measured: 1, 5, 15 and the agent's own ``agent.imag_length``."""
    return tuple(sorted({*BASE_HORIZONS, imag_length}))


def discounted_returns(
    reward: torch.Tensor, terminal: torch.Tensor, boot: float | torch.Tensor, discount: float
) -> torch.Tensor:
    """Discounted returns ``[T]`` of one episode's ``reward [T]`` (received on arriving at
    each step) and ``terminal [T]``: ``G_t = r_{t+1} + discount (1 - terminal_{t+1})
    G_{t+1}``, with ``G_{T-1} = 0`` if step ``T-1`` is terminal and ``boot`` otherwise."""
    T = reward.shape[0]
    live = 1.0 - terminal.float()
    out = torch.empty(T, dtype=torch.float64)
    last = torch.as_tensor(boot, dtype=torch.float64) * live[-1]
    out[-1] = last
    for t in range(T - 2, -1, -1):
        last = reward[t + 1].double() + discount * live[t + 1].double() * last
        out[t] = last
    return out


def imagined_returns(
    reward: torch.Tensor,
    cont: torch.Tensor,
    value: torch.Tensor,
    horizons: Sequence[int],
    disc: float,
    lam: float,
) -> torch.Tensor:
    """The λ-return from the start of imagined trajectories, cut at each horizon ``h``:
    ``[len(horizons), N]``.

    ``reward``, ``cont``, ``value`` are ``[N, H+1]`` with the start first (its reward and
    continue unused), as :func:`~dreamrl.behaviors.actor_critic.lambda_return` takes them:
    for ``h = 1``, ``R = r_1 + disc c_1 v_1``; for ``h = 2``, ``R = r_1 + disc c_1 ((1 - λ)
    v_1 + λ (r_2 + disc c_2 v_2))``."""
    H = reward.shape[1] - 1
    out = []
    for h in horizons:
        if not 1 <= h <= H:
            raise ValueError(f"horizon {h} is outside the {H} imagined steps")
        sl = slice(0, h + 1)
        ret = lambda_return(
            torch.zeros_like(cont[:, sl]), 1 - cont[:, sl], reward[:, sl], value[:, sl], disc, lam
        )
        out.append(ret[:, 0])
    return torch.stack(out)


def gap_summary(imagined: torch.Tensor, real: torch.Tensor, horizons: Sequence[int]) -> dict[str, Any]:
    """``{horizons, imagined, real, gap, abs_gap, starts}`` from the imagined returns
    ``[len(horizons), N]`` and the real ones ``[N]``: means over the ``N`` starts."""
    imagined, real = imagined.double(), real.double()
    diff = imagined - real[None]
    return {
        "horizons": [int(h) for h in horizons],
        "imagined": imagined.mean(1).tolist(),
        "real": float(real.mean()),
        "gap": diff.mean(1).tolist(),
        "abs_gap": diff.abs().mean(1).tolist(),
        "starts": int(real.shape[0]),
    }


def pad_episodes(episodes: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Episodes ``{key: [T_e, ...]}`` stacked into ``{key: [E, max T_e, ...]}``, each padded
    by repeating its last step (the states of steps ``< T_e`` do not depend on the padding)."""
    length = max(len(ep["reward"]) for ep in episodes)

    def pad(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v, np.repeat(v[-1:], length - len(v), 0)]) if len(v) < length else v

    return {k: np.stack([pad(np.asarray(ep[k])) for ep in episodes]) for k in episodes[0]}


def pick_starts(lengths: Sequence[int], first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` start steps ``(episode, t)`` spread evenly over every episode's steps
    ``first .. T_e - 2`` (a start needs one real step after it)."""
    pairs = [(e, t) for e, n in enumerate(lengths) for t in range(first, n - 1)]
    if len(pairs) > count:
        keep = np.linspace(0, len(pairs) - 1, count).round().astype(int)
        pairs = [pairs[i] for i in keep]
    if not pairs:
        return np.zeros(0, int), np.zeros(0, int)
    e, t = zip(*pairs)
    return np.asarray(e), np.asarray(t)


class BehaviourView(WorldModelView):
    """The world model as the agent's behaviour reads it (continues under
    ``agent.imag_continue``), plus its policy and critic."""

    def __init__(self, agent: Any, generator: torch.Generator):
        super().__init__(agent)
        self.cfg = agent.config.agent
        self.sample = bool(agent.config.run.eval_sample)
        self.generator = generator

    def cont(self, states: State) -> torch.Tensor:
        return imagined_continue(super().cont(states), self.cfg)

    def act(self, features: torch.Tensor) -> torch.Tensor:
        with self.precision():
            dist = self.agent.ac.actor(features)
            return dist.sample(self.generator) if self.sample else dist.mode()  # type: ignore[no-any-return]

    def value(self, states: State) -> torch.Tensor:
        ac = self.agent.ac
        critic = ac.slow_critic if self.cfg.imag_loss.slowtar else ac.critic
        with self.precision():
            return ac.critic.mean(critic(self.wm.features(states))).float()  # type: ignore[no-any-return]


@torch.no_grad()
def fantasy_gap(
    agent: Any,
    episodes: Sequence[dict[str, np.ndarray]],
    horizons: Sequence[int] | None = None,
    context: int = 16,
    max_starts: int = 256,
    seed: int = 0,
) -> dict[str, Any] | None:
    """The fantasy gap of ``agent`` (a Dreamer agent: a world model and an actor-critic)
    on recorded ``episodes`` (see the module docstring), from starts that have seen at
    least ``context`` steps; None when no episode is longer than that."""
    cfg = agent.config.agent
    horizons = tuple(horizons or fantasy_horizons(cfg.imag_length))
    usable = [ep for ep in episodes if len(ep["reward"]) > context]
    if not usable:
        return None
    lengths = [len(ep["reward"]) for ep in usable]
    gen = torch.Generator(agent.device).manual_seed(seed)
    view = BehaviourView(agent, gen)
    batch = agent.to_batch(pad_episodes(usable))
    post = view.observe(batch, gen).states  # [E, L, ...]
    values = view.value(post)  # [E, L]
    discount = 1 - 1 / cfg.horizon
    real_all = [
        discounted_returns(
            batch.reward[e, :n].cpu(), batch.is_terminal[e, :n].cpu(), values[e, n - 1].cpu(), discount
        )
        for e, n in enumerate(lengths)
    ]
    e_idx, t_idx = pick_starts(lengths, context - 1, max_starts)
    rows, cols = torch.as_tensor(e_idx, device=agent.device), torch.as_tensor(t_idx, device=agent.device)
    starts = map_state(lambda x: x[rows, cols], post)  # [N, ...]
    imagined = view.imagine(starts, view.act, gen, max(horizons)).states  # [N, H, ...]
    first = values[rows, cols][:, None]
    reward = torch.cat([torch.zeros_like(first), view.reward(imagined).float()], 1)  # [N, H+1]
    cont = torch.cat([torch.ones_like(first), view.cont(imagined).float()], 1)
    value = torch.cat([first, view.value(imagined)], 1)
    disc = 1.0 if cfg.contdisc else 1 - 1 / cfg.horizon
    imag = imagined_returns(reward, cont, value, horizons, disc, cfg.imag_loss.lam)
    real = torch.stack([real_all[e][t] for e, t in zip(e_idx, t_idx)])
    return gap_summary(imag.cpu(), real, horizons)
