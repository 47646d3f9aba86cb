"""``dreamrl bench``: how fast training runs here, and how close to the hardware.

Times full train steps (world model plus actor-critic update) after a warm-up, counts
their floating-point operations with torch's FLOP counter, and measures a large matrix
product in the same process, in the step's compute precision (``compute.precision``), as the
peak to compare against (the float32 one is always given too). Also times the
policy (one batched acting step), a replay sample, and the chosen env's steps.

With ``compute.codec_chunk`` the backward pass runs the encoder and decoder forward a
second time; those FLOPs are counted apart (``gflop_recomputed``) and left out of
``gflop_per_step``, so the achieved rate is the model's work per second whatever the
memory setting.

Train steps run on replay batches of random data shaped like the env's: a step's cost
does not depend on what the numbers are, and no minutes go into collecting them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dreamrl.config import Config
from dreamrl.run.allocator import malloc_in_use, release_free_memory


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_gflops(
    size: int = 2048,
    repeats: int = 5,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    min_seconds: float = 0.05,
) -> float:
    """GFLOP/s of a square matrix product in ``dtype``, the best of ``repeats``.

    The side starts at 256 and doubles up to ``size`` while one product takes less than
    ``min_seconds``: big enough to reach the machine's peak, yet bounded where ``dtype``
    is emulated (bfloat16 on a CPU without bfloat16 units runs at well under 1 GFLOP/s,
    where a 2048 product would take a minute)."""
    side = min(256, size)
    while True:
        a = torch.randn(side, side, device=device, dtype=dtype)
        b = torch.randn(side, side, device=device, dtype=dtype)
        if _time_product(a, b) >= min_seconds or side >= size:
            break
        side *= 2
    best = 0.0
    for _ in range(repeats):
        best = max(best, 2 * side**3 / _time_product(a, b) / 1e9)
    return best


def _time_product(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    a @ b
    if a.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def random_batch(
    spaces: dict[str, Any], batch: int, length: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Replay-shaped random data, episodes starting at every sequence's first step."""
    out = {}
    for key, space in spaces.items():
        shape = (batch, length, *space.shape)
        if space.dtype == "uint8":
            out[key] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif space.dtype == "bool":
            out[key] = np.zeros(shape, bool)
        elif space.discrete:
            out[key] = rng.integers(0, space.classes, shape).astype(np.int32)
        else:
            out[key] = rng.uniform(-1, 1, shape).astype(np.float32)
    out["is_first"][:, 0] = True
    return out


def env_steps_per_s(env: Any, steps: int, rng: np.random.Generator) -> float:
    """Agent steps per second of ``env`` under random actions, resets included."""
    from dreamrl.envs.check import random_action

    step = env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        step = env.reset() if step["is_last"] else env.step(random_action(env.act_space, rng))
    return steps / (time.perf_counter() - start)


PHASES = (
    "wm/encode",
    "wm/observe",
    "wm/decode",
    "wm/heads",
    "ac/imagine",
    "ac/loss",
    "backward",
    "optimizer",
)


def profile_step(step: Callable[[], Any], top: int) -> dict[str, Any]:
    """Where one train step's time goes, from torch's profiler.

    Returns ``phases`` (seconds inside each of the train step's named scopes, PHASES;
    ``backward`` covers the gradient of every loss), ``step_s`` (the profiled step's wall
    time, profiler overhead included) and ``top_ops``: the ``top`` operators with the most
    self time, each ``{name, calls, self_s, share}`` where ``share`` is of all operators'
    self time.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        step()
    wall = time.perf_counter() - start
    averages = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e6 for e in averages if e.key in PHASES}
    ops = [e for e in averages if e.key not in PHASES and not e.key.startswith("ProfilerStep")]
    total_self = sum(e.self_cpu_time_total for e in ops) or 1.0
    ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "step_s": wall,
        "phases": {name: phases.get(name, 0.0) for name in PHASES},
        "top_ops": [
            {
                "name": e.key,
                "calls": e.count,
                "self_s": e.self_cpu_time_total / 1e6,
                "share": e.self_cpu_time_total / total_self,
            }
            for e in ops[:top]
        ],
    }


def recomputed_flops(agent: Any, data: dict[str, np.ndarray]) -> float:
    """FLOPs of the encoder and decoder forward passes that ``compute.codec_chunk`` runs again
    in the backward pass of a step on ``data`` (0 without chunking). Counted on dummy
    features in no-grad chunks: the count depends on shapes, not values."""
    from dreamrl.flops import counted

    wm = agent.wm
    chunk = getattr(wm, "codec_chunk", 0)
    if not chunk:
        return 0.0
    decoder = getattr(wm, "decoder", None)  # a decoder-free model chunks its encoder only
    batch = agent.to_batch(data)
    obs = {k: v.flatten(0, 1) for k, v in batch.obs.items()}
    n = batch.is_first.numel()
    deter = torch.zeros(n, wm.rssm.cfg.deter, device=agent.device)
    stoch = torch.zeros(n, wm.rssm.stoch_flat, device=agent.device)

    def codec_passes() -> None:
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            wm.encoder({k: v[rows] for k, v in obs.items()})
            if decoder is not None:
                decoder(deter[rows], stoch[rows])

    with torch.no_grad():
        _, flop = counted(codec_passes)
    return float(flop)


def imagination_seconds(agent: Any, data: dict[str, np.ndarray], repeats: int = 3) -> tuple[float, int]:
    """Seconds the world model takes to imagine ``agent.imag_length`` steps under the
    actor from the posterior states of a batch (as many starts as an update's,
    ``agent.imag_last`` included), without gradient; and the number of starts."""
    from dreamrl.world_models.base import map_state

    cfg = agent.config.agent
    with torch.no_grad(), agent.autocast():
        states = agent.wm.observe(agent.to_batch(data)).states
        T = data["reward"].shape[1]
        K = min(cfg.imag_last or T, T)
        starts = map_state(lambda t: t[:, T - K :].flatten(0, 1), states)
        count = int(agent.wm.features(starts).shape[0])

        def imagine() -> None:
            agent.wm.imagine(starts, lambda f: agent.ac.actor(f).sample(), cfg.imag_length)

        return _median_seconds(imagine, repeats), count


def compare_world_models(config: Config, names: list[str], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`bench` of ``config`` under each world model's preset (``wm_<name>``), in turn."""
    from dreamrl.config import build_config

    results = []
    for name in names:
        # Each model compiles its own graphs from scratch, as in a run of its own: graphs
        # kept from the model before would count against torch.compile's per-function
        # limit and turn its first steps into recompilations.
        torch._dynamo.reset()
        results.append(bench(build_config([f"wm_{name}"], base=config, size=None), **kwargs))
    return results


def describe_comparison(results: list[dict[str, Any]]) -> str:
    """One line per world model: its step, the step against the first's, its imagination."""
    first = results[0]["train_step_s"]
    lines = [
        f"{'world model':<12} {'train step':>11} {'vs first':>9} {'imagined step':>14} "
        f"{'starts':>7} {'params':>10}"
    ]
    for r in results:
        lines.append(
            f"{r['world_model']:<12} {r['train_step_s']:>9.3f} s {r['train_step_s'] / first:>8.2f}x "
            f"{r['imagine_step_ms']:>11.2f} ms {r['imagine_starts']:>7} {r['params']:>10,}"
        )
    return "\n".join(lines)


def bench(
    config: Config, train_steps: int = 5, warmup: int = 2, env_steps: int = 200, profile: int = 0
) -> dict[str, Any]:
    """Every figure of ``dreamrl bench`` for ``config`` (see the module docstring);
    with ``profile=N`` also where a step's time goes (``profile_step``, N operators)."""
    from dreamrl.agents.dreamer import DreamerAgent as Agent
    from dreamrl.envs import make_env
    from dreamrl.flops import counted
    from dreamrl.precision import COMPUTE_DTYPES
    from dreamrl.replay import Replay, step_bytes
    from dreamrl.run.train import resident_mb
    from dreamrl.spaces import replay_spaces

    rng = np.random.default_rng(0)
    env = make_env(config, 0)
    try:
        env_fps = env_steps_per_s(env, env_steps, rng)
        obs_space, act_space = env.obs_space, env.act_space
    finally:
        env.close()
    agent = Agent(config, obs_space, act_space)
    B, T = config.batch_size, config.batch_length
    spaces = replay_spaces(obs_space, act_space)
    replay = Replay(spaces, max(4 * B * T, 4096), 1, T, online=False)
    filler = random_batch(spaces, 1, 4 * B * T, rng)
    for t in range(filler["reward"].shape[1]):
        replay.add({k: v[:, t] for k, v in filler.items()})
    sample_s = _median_seconds(lambda: replay.sample(B), 20)
    # What the replay's rings take against the bare observations they hold (frames as uint8).
    replay_overhead = replay.nbytes() / (step_bytes(obs_space) * replay.streams * replay.slots)
    data = random_batch(spaces, B, T, rng)
    sync = torch.cuda.synchronize if agent.device.type == "cuda" else (lambda: None)

    steps_run = 0

    def step() -> None:
        # As the training loop runs them: a release every run.release_every steps, whose
        # page faults fall in the step after it (the median hides them; see its docs).
        nonlocal steps_run
        agent.train_step(data)
        sync()
        steps_run += 1
        every = config.run.release_every
        if every and steps_run % every == 0:
            release_free_memory()

    for _ in range(warmup):
        step()

    step_s = _median_seconds(step, train_steps)
    # Memory of training alone: the profiler and the FLOP count below add their own.
    peak_rss_mb = resident_mb()[1]
    envs = config.run.envs
    obs = {k: v[:envs, 0] for k, v in random_batch(spaces, envs, 1, rng).items() if k in obs_space}
    obs["is_first"] = np.ones(envs, bool)
    state = agent.policy(obs, None)[1]
    policy_s = _median_seconds(lambda: agent.policy(obs, state), 50)
    imagine_s, imagine_starts = imagination_seconds(agent, data)
    peak_f32 = matmul_peak_gflops(device=agent.device)
    # The yardstick of achieved GFLOP/s is a product in the step's own compute dtype.
    dtype = COMPUTE_DTYPES[config.compute.precision]
    peak = peak_f32 if dtype == torch.float32 else matmul_peak_gflops(device=agent.device, dtype=dtype)
    profiled = profile_step(step, profile) if profile else None
    # Counted last: a step run under the counter's dispatch mode leaves torch.compile'd
    # code (compute.compile) running as slowly as eager code afterwards.
    _, counted_flop = counted(lambda: agent.train_step(data))
    recomputed = recomputed_flops(agent, data)
    flop = counted_flop - recomputed
    return {
        "task": config.task,
        "device": str(agent.device),
        "threads": torch.get_num_threads(),
        "presets": list(config.presets),
        "params": agent.param_count(),
        "batch": [B, T],
        "train_steps_per_s": 1.0 / step_s,
        "train_step_s": step_s,
        "gflop_per_step": flop / 1e9,
        "gflop_recomputed": recomputed / 1e9,
        "codec_chunk": getattr(agent.wm, "codec_chunk", 0),
        "precision": config.compute.precision,
        "achieved_gflops": flop / 1e9 / step_s,
        "peak_gflops": peak,
        "peak_gflops_float32": peak_f32,
        "peak_fraction": flop / 1e9 / step_s / peak,
        "world_model": config.agent.wm,
        "imagine_step_ms": 1000 * imagine_s / config.agent.imag_length,
        "imagine_starts": imagine_starts,
        "act": config.agent.act,
        "policy_step_ms": 1000 * policy_s,
        "policy_envs": envs,
        "replay_sample_ms": 1000 * sample_s,
        "replay_bytes_per_obs_byte": replay_overhead,
        "env_steps_per_s": env_fps,
        "peak_rss_mb": peak_rss_mb,
        "malloc": malloc_in_use(),
        **({"profile": profiled} if profiled else {}),
    }


def describe(r: dict[str, Any]) -> str:
    """The figures as lines for a person."""
    presets = " ".join(r["presets"]) or "none"
    batch = f"{r['batch'][0]}x{r['batch'][1]}"
    lines = [
        f"dreamrl bench {r['task']} on {r['device']} ({r['threads']} threads), presets {presets}, "
        f"{r['params']:,} parameters, batch {batch}",
        f"  train step        {r['train_step_s']:.3f} s  ({r['train_steps_per_s']:.2f} steps/s)",
        f"  FLOPs per step    {r['gflop_per_step']:.1f} GFLOP (torch's FLOP counter)"
        + (
            f"; another {r['gflop_recomputed']:.1f} recomputed (compute.codec_chunk={r['codec_chunk']})"
            if r["gflop_recomputed"]
            else ""
        ),
        f"  achieved          {r['achieved_gflops']:.1f} GFLOP/s = {r['peak_fraction']:.0%} of the "
        f"{r['precision']} matmul peak {r['peak_gflops']:.1f} GFLOP/s measured here"
        + (f" (float32: {r['peak_gflops_float32']:.1f})" if r["precision"] != "float32" else ""),
        f"  imagined step     {r['imagine_step_ms']:.2f} ms from {r['imagine_starts']} starts "
        f"(world model {r['world_model']}, no gradient)",
        f"  policy step       {r['policy_step_ms']:.2f} ms for {r['policy_envs']} envs "
        f"({'planning, agent.act=mpc' if r.get('act') == 'mpc' else 'the actor'}; "
        f"{1000 * r['policy_envs'] / r['policy_step_ms']:.1f} env steps/s)",
        f"  replay sample     {r['replay_sample_ms']:.2f} ms per batch; holds "
        f"{r['replay_bytes_per_obs_byte']:.3f} bytes per byte of observations",
        f"  env               {r['env_steps_per_s']:.1f} steps/s (random actions)",
        f"  peak memory       {r['peak_rss_mb']:.0f} MB resident (over the timed train steps; "
        f"malloc: {r['malloc']})",
    ]
    if "profile" in r:
        p = r["profile"]
        lines.append(f"profile of one step ({p['step_s']:.3f} s with the profiler on):")
        for name, seconds in p["phases"].items():
            lines.append(f"  {name:<12} {seconds:8.3f} s  {seconds / p['step_s']:4.0%}")
        lines.append("  operators with the most self time:")
        for op in p["top_ops"]:
            lines.append(f"  {op['share']:4.0%}  {op['self_s']:7.3f} s  {op['calls']:6d} calls  {op['name']}")
    return "\n".join(lines)
