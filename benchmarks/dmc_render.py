"""DeepMind Control from pixels: agent steps per second through dreamrl's adapter
against bare dm_control doing the same work (step + 64x64 render), in one process.

    python benchmarks/dmc_render.py [--task cartpole_balance] [--steps 300] [--repeats 5]

Both loops take the same actions on the same task and seed and render the same
camera; the adapter adds its conversion to step dicts. A third loop runs the adapter with
``env.dmc.fast_render`` (no shadows or reflections). The loops are timed alternately,
``--repeats`` times, and the medians are printed with their ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dreamrl.config import build_config
from dreamrl.envs import make_env
from dreamrl.envs.dmc import DEFAULT_CAMERAS, parse_task, select_gl_backend


def bare_fps(domain: str, task: str, steps: int, seed: int) -> float:
    from dm_control import suite

    env = suite.load(domain, task, task_kwargs={"random": seed})
    camera = DEFAULT_CAMERAS.get(domain, 0)
    action = np.zeros(env.action_spec().shape)
    env.reset()
    env.physics.render(64, 64, camera_id=camera)  # warm the GL context
    start = time.perf_counter()
    for _ in range(steps):
        time_step = env.step(action)
        env.physics.render(64, 64, camera_id=camera)
        if time_step.last():
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def adapter_fps(name: str, steps: int, seed: int, fast_render: bool = False) -> float:
    config = build_config(["dmc_vision"], {"task": f"dmc:{name}", "env.dmc.fast_render": fast_render})
    env = make_env(config, seed)
    action = np.zeros(env.act_space.shape, np.float32)
    step = env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        step = env.reset() if step["is_last"] else env.step(action)
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def fast_render_fps(name: str, steps: int, seed: int) -> float:
    """The adapter with ``env.dmc.fast_render``, in a process of its own: the rasteriser's
    thread setting it chooses is read when a process makes its first GL context."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(adapter_fps, (name, steps, seed, True))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="cartpole_balance")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backend = select_gl_backend()
    domain, task = parse_task(args.task)
    bare, adapter, fast = [], [], []
    for i in range(args.repeats):
        bare.append(bare_fps(domain, task, args.steps, i))
        adapter.append(adapter_fps(args.task, args.steps, i))
        fast.append(fast_render_fps(args.task, args.steps, i))
    b, a, f = statistics.median(bare), statistics.median(adapter), statistics.median(fast)
    print(f"dmc:{args.task} at 64x64, MUJOCO_GL={backend}, {args.steps} steps x {args.repeats} repeats")
    print(f"bare dm_control step+render: {b:8.1f} steps/s (min {min(bare):.1f}, max {max(bare):.1f})")
    print(f"dreamrl adapter:             {a:8.1f} steps/s (min {min(adapter):.1f}, max {max(adapter):.1f})")
    print(f"adapter, fast_render:        {f:8.1f} steps/s (min {min(fast):.1f}, max {max(fast):.1f})")
    print(f"adapter / bare: {a / b:.3f}; fast_render / default adapter: {f / a:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
