"""Evaluation: the deterministic policy on fresh seeds, a fixed number of episodes.

Episodes are assigned to env slots up front (slot ``i`` runs episodes ``i, i+S, ...``),
so running several envs at once never biases the sample toward short episodes.
Every episode's seed comes from the evaluation seed stream, disjoint from training's.

An evaluation's cost is bounded: an episode still running after ``max_steps`` steps is
cut there (its return so far is its score, and the result says it was cut), and
recorded episodes keep at most ``record_steps`` steps each, so that memory stays flat
however long an untrained policy keeps an episode going.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dreamrl.agents.base import Agent
from dreamrl.config import RunConfig
from dreamrl.envs import EVAL_STREAM, env_seed
from dreamrl.envs.base import Env
from dreamrl.envs.pool import EnvHandle, stack


@dataclass(frozen=True)
class EvalResult:
    returns: list[float]
    lengths: list[int]
    seeds: list[int]
    episodes: list[dict[str, np.ndarray]] = field(default_factory=list)  # with record=True
    cut: list[bool] = field(default_factory=list)  # episodes cut at max_steps

    @property
    def cut_count(self) -> int:
        return sum(self.cut)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "episodes": len(self.returns),
            "mean_return": self.mean,
            "std_return": self.std,
            "returns": self.returns,
            "lengths": self.lengths,
            "seeds": self.seeds,
            "cut": self.cut,
        }


def eval_seeds(seed: int, first: int, count: int) -> list[int]:
    """Seeds of evaluation episodes ``first .. first+count-1`` for run seed ``seed``."""
    return [env_seed(seed, EVAL_STREAM, first + i) for i in range(count)]


def evaluate(
    agent: Agent,
    make_env: Callable[[], Env],
    seeds: Sequence[int],
    envs: int = 1,
    deterministic: bool = True,
    record: bool = False,
    workers: str = "inline",
    timeout: float = 60.0,
    check: Callable[[], None] | None = None,
    max_steps: int = 0,
    record_steps: int = 0,
) -> EvalResult:
    """Run one episode per seed with ``agent.policy`` and return their scores.

    ``workers='process'`` steps each env in a worker process of its own (``make_env``
    must then pickle), in parallel and without loading the simulator into this process;
    ``timeout`` bounds each call to a worker (0: none). ``check`` is called before each
    step; what it raises ends the evaluation (a training run's stop signal).

    With ``record`` the result also holds every episode as arrays ``{key: [T, ...]}``:
    the step dicts and, under ``action``, the action taken at each step (zeros on the
    last), the first ``record_steps`` steps of each (0: all). These episodes were never
    trained on: diagnostics use them as held-out data. ``max_steps`` (0: none) cuts an
    episode after that many steps.
    """
    episodes = len(seeds)
    slots = max(1, min(envs, episodes))
    plan = [list(range(i, episodes, slots)) for i in range(slots)]
    mode = workers if slots > 1 else "inline"  # one env gains nothing from a process
    pool: list[EnvHandle] = []
    returns = [0.0] * episodes
    lengths = [0] * episodes
    cut = [False] * episodes
    keep = record_steps if record_steps > 0 else None
    traces: list[list[dict[str, np.ndarray]]] = [[] for _ in range(episodes)]
    try:
        for i in range(slots):
            pool.append(EnvHandle(make_env, i, mode, timeout))
        for env in pool:  # the workers build their envs at once; wait for each
            env.start()
        current = [p.pop(0) for p in plan]
        steps = [env.reset(seed=int(seeds[ep])) for env, ep in zip(pool, current)]
        active = list(range(slots))
        state = None
        while active:
            if check is not None:
                check()
            obs = stack([steps[i] for i in active])
            actions, state = agent.policy(obs, state, deterministic=deterministic)
            for row, i in enumerate(active):
                if record and (keep is None or len(traces[current[i]]) < keep):
                    traces[current[i]].append({**steps[i], "action": actions[row]})
                pool[i].send_step(actions[row])
            next_active = []
            keep_rows = []
            for row, i in enumerate(active):
                step = pool[i].wait()
                ep = current[i]
                returns[ep] += float(step["reward"])
                lengths[ep] += 1
                if max_steps and lengths[ep] >= max_steps and not step["is_last"]:
                    cut[ep] = True  # ended here as a time limit of the evaluation's own
                    step = {**step, "is_last": np.array(True)}
                if record and step["is_last"] and (keep is None or len(traces[ep]) < keep):
                    traces[ep].append({**step, "action": np.zeros_like(actions[row])})
                if not step["is_last"]:
                    steps[i] = step
                    next_active.append(i)
                    keep_rows.append(row)
                elif plan[i]:
                    current[i] = plan[i].pop(0)
                    steps[i] = pool[i].reset(seed=int(seeds[current[i]]))
                    next_active.append(i)
                    keep_rows.append(row)
            if state is not None and len(keep_rows) != len(active):
                state = agent.select_rows(state, torch.as_tensor(keep_rows, dtype=torch.long))
            active = next_active
    finally:
        for env in pool:
            env.close()
    recorded = [{k: np.stack([s[k] for s in trace]) for k in trace[0]} for trace in traces] if record else []
    return EvalResult(returns, lengths, [int(s) for s in seeds], recorded, cut)


def evaluate_as_run_says(
    agent: Agent,
    make_env: Callable[[], Env],
    seeds: Sequence[int],
    run: RunConfig,
    record_steps: int = 0,
    check: Callable[[], None] | None = None,
) -> EvalResult:
    """:func:`evaluate` with the settings ``run.eval_*`` and the env workers a training run
    names (every loop evaluates through this, so they evaluate alike)."""
    return evaluate(
        agent,
        make_env,
        seeds,
        run.eval_envs,
        deterministic=not run.eval_sample,
        record=record_steps > 0,
        workers=run.env_workers,
        timeout=run.env_timeout,
        check=check,
        max_steps=run.eval_max_steps,
        record_steps=record_steps,
    )


def eval_metrics(result: EvalResult) -> dict[str, Any]:
    """The ``eval/*`` metrics of an evaluation, as every run logs them."""
    return {
        "eval/return": result.mean,
        "eval/return_std": result.std,
        "eval/length": float(np.mean(result.lengths)),
        "eval/returns": result.returns,
        "eval/episodes": len(result.returns),
        "eval/cut": result.cut_count,
    }


def eval_line(result: EvalResult, when: str, max_steps: int) -> str:
    """The one line a run prints after an evaluation, ``when`` saying at what point."""
    cut = f", {result.cut_count} cut at {max_steps:,} steps" if result.cut_count else ""
    return (
        f"eval {when}: return {result.mean:.1f} ± {result.std:.1f} over {len(result.returns)} episodes{cut}"
    )
