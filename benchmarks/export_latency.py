"""Act latency at batch 1: the exported ONNX policy under onnxruntime, the TorchScript
file under torch.jit.load, and the library's own ``policy`` and ``act``, on this CPU.

    python benchmarks/export_latency.py [--presets debug size1m] [--task CartPole-v1] [--pixels]
                                        [--steps 500] [--repeats 5] [--threads 1]

For each preset an untrained agent (latency does not depend on what the weights hold) is
exported to ONNX and TorchScript in a temporary dir; ``--steps`` observations of the env
are recorded once, and each way of acting steps through them with its state carried,
``--repeats`` times in turn. Printed: the median over repeats of the mean time a step,
in microseconds. ``policy`` takes a step dict of model keys (as the training loop does);
``act`` takes the env's own observation and returns the env's action (as a user's loop
does), so it includes the observation conversion. onnxruntime and torch each get
``--threads`` threads.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dreamrl.agent import Agent
from dreamrl.config import build_config
from dreamrl.envs import make_env
from dreamrl.export import export_policy
from dreamrl.export.check import record_env
from dreamrl.export.formats import load
from dreamrl.export.graph import PolicyStep


def build_agent(preset: str, task: str, pixels: bool) -> Agent:
    overrides = {"task": task, "compute.device": "cpu", "compute.compile": False, "env.pixels": pixels}
    config = build_config([preset], overrides)
    env = make_env(config, 0)
    agent = Agent(config, env.obs_space, env.act_space, "cpu", env.obs_converter, env.act_converter)
    env.close()
    return agent


def time_loop(step_once: Callable[[int], None], steps: int) -> float:
    """Mean seconds a call of ``step_once(t)`` for ``t`` in ``range(steps)``."""
    start = time.perf_counter()
    for t in range(steps):
        step_once(t)
    return (time.perf_counter() - start) / steps


def file_loop(agent: Agent, fmt: str, path: Path, obs: list[dict[str, np.ndarray]]) -> Callable[[], float]:
    step = PolicyStep(agent)
    runner = load(fmt, path, [t.name for t in step.inputs], [t.name for t in step.outputs])
    names = [t.name for t in step.inputs if t.role == "state"]
    zeros = {t.name: np.zeros((1, *t.dims), t.dtype) for t in step.inputs if t.role == "state"}

    def run() -> float:
        state = dict(zeros)

        def once(t: int) -> None:
            nonlocal state
            out = runner({**obs[t], **state})
            state = {name: out["next_" + name] for name in names}

        return time_loop(once, len(obs))

    return run


def policy_loop(agent: Agent, obs: list[dict[str, np.ndarray]]) -> Callable[[], float]:
    def run() -> float:
        state = None

        def once(t: int) -> None:
            nonlocal state
            _, state = agent.policy(obs[t], state, deterministic=True)

        return time_loop(once, len(obs))

    return run


def act_loop(agent: Agent, raw: list[object], first: list[bool]) -> Callable[[], float]:
    def run() -> float:
        state = None

        def once(t: int) -> None:
            nonlocal state
            _, state = agent.act(raw[t], None if first[t] else state)

        return time_loop(once, len(raw))

    return run


def raw_observations(agent: Agent, steps: int, seed: int) -> tuple[list[object], list[bool]]:
    """``steps`` raw gymnasium observations (renders for a pixel agent) and episode starts."""
    env = make_env(agent.config, seed, "eval")
    gym_env = env.env  # type: ignore[attr-defined]
    pixels = agent.config.env.pixels
    raw, first = [], []
    obs, _ = gym_env.reset(seed=seed)
    is_first = True
    for _ in range(steps):
        raw.append(gym_env.render() if pixels else obs)
        first.append(is_first)
        obs, _, terminated, truncated, _ = gym_env.step(gym_env.action_space.sample())
        is_first = terminated or truncated
        if is_first:
            obs, _ = gym_env.reset()
    env.close()
    return raw, first


def measure(preset: str, args: argparse.Namespace, out_dir: Path) -> dict[str, float]:
    agent = build_agent(preset, args.task, args.pixels)
    loops: dict[str, Callable[[], float]] = {}
    obs = record_env(agent, args.steps, seed=0).obs
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        path = out_dir / f"{preset}{suffix}"
        export_policy(agent, fmt, path, check_on=None)
        loops[fmt] = file_loop(agent, fmt, path, obs)
    loops["library policy"] = policy_loop(agent, obs)
    raw, first = raw_observations(agent, args.steps, seed=0)
    loops["library act"] = act_loop(agent, raw, first)
    times: dict[str, list[float]] = {name: [] for name in loops}
    for loop in loops.values():
        loop()  # warm-up: first calls allocate and pick kernels
    for _ in range(args.repeats):
        for name, loop in loops.items():
            times[name].append(loop())
    print(f"{preset}: {agent.param_count():,} parameters ({args.task}{', pixels' if args.pixels else ''})")
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["debug", "size1m"])
    p.add_argument("--task", default="CartPole-v1")
    p.add_argument("--pixels", action="store_true", help="the agent reads the env's render")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            rows[preset] = measure(preset, args, Path(tmp))
    names = list(next(iter(rows.values())))
    print(
        f"\nmicroseconds a step at batch 1, {args.threads} thread(s), "
        f"median of {args.repeats} x {args.steps} steps"
    )
    print(f"{'preset':<10}" + "".join(f"{n:>18}" for n in names))
    for preset, row in rows.items():
        print(f"{preset:<10}" + "".join(f"{row[n]:>18.0f}" for n in names))
        print(f"{'':<10}" + "".join(f"{row[n] / row['onnx']:>17.2f}x" for n in names))


if __name__ == "__main__":
    main()
