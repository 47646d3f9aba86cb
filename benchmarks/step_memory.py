"""Live tensor memory through one train step: where a step's peak memory comes from.

    python benchmarks/step_memory.py                                  # dmc_vision size12m
    python benchmarks/step_memory.py --preset dmc_vision size1m compute.codec_chunk=128

Runs one warm-up step, then one step under PyTorch's profiler with ``profile_memory``,
and prints the bytes of live tensors at the start and end of each named phase of the
step (the ``record_function`` scopes that ``dreamrl bench --profile`` also reads), the
peak and its split by PyTorch's categories (parameters, optimiser state, inputs,
activations, gradients, ...), and the process's peak resident memory, which also holds
the libraries, what the allocator keeps, and the profiler's own records (`dreamrl bench`
gives the resident peak of training alone).
"""

from __future__ import annotations

import argparse
import bisect
import json
import tempfile
from pathlib import Path

import numpy as np
from torch.profiler import ProfilerActivity, profile

from dreamrl.agent import Agent
from dreamrl.config import build_config, parse_overrides
from dreamrl.envs import make_env
from dreamrl.run.allocator import exec_with_jemalloc, tune_allocator
from dreamrl.run.bench import PHASES, random_batch
from dreamrl.run.train import resident_mb
from dreamrl.spaces import replay_spaces

# The columns of torch's memory timeline export (torch.profiler._memory_profiler): an unused
# first one, then its categories in order, the last for tensors it could not place.
CATEGORIES = (
    "-",
    "parameter",
    "optimizer state",
    "input",
    "temporary",
    "activation",
    "gradient",
    "autograd detail",
    "uncategorised",
)
MB = 2**20


def main() -> int:
    exec_with_jemalloc()  # as the dreamrl command does: restarts with jemalloc unless DREAMRL_MALLOC=glibc
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="dmc:cartpole_balance")
    parser.add_argument("--preset", nargs="+", default=["dmc_vision", "size12m"])
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    tune_allocator()  # where glibc stays (DREAMRL_MALLOC=glibc, or no libjemalloc)
    config = build_config(args.preset, {"task": args.env, **parse_overrides(args.overrides)})
    env = make_env(config, 0)
    obs_space, act_space = env.obs_space, env.act_space
    env.close()
    agent = Agent(config, obs_space, act_space)
    spaces = replay_spaces(obs_space, act_space)
    data = random_batch(spaces, config.batch_size, config.batch_length, np.random.default_rng(0))
    agent.train_step(data)  # warm-up: compiling and first-touch allocations stay out of the trace
    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        agent.train_step(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        times_us, sizes = json.loads(path.read_text())
    sizes = np.asarray(sizes, dtype=np.float64)  # [samples, categories], bytes
    live = sizes.sum(1)
    # Timeline stamps are microseconds since the epoch; event ranges, microseconds since the trace began.
    offsets = [t - prof.profiler.kineto_results.trace_start_ns() / 1000 for t in times_us]

    def live_at(us: float) -> float:
        i = max(0, min(len(offsets) - 1, bisect.bisect_right(offsets, us) - 1))
        return float(live[i])

    print(f"{args.env}, presets {' '.join(args.preset)} {' '.join(args.overrides)}")
    print(f"{'phase':<12} {'live at start':>14} {'live at end':>12}  (MB of tensors)")
    for event in prof.events():
        if event.name in PHASES:
            start, end = event.time_range.start, event.time_range.end
            print(f"{event.name:<12} {live_at(start) / MB:14.1f} {live_at(end) / MB:12.1f}")
    peak = int(live.argmax())
    split = ", ".join(f"{name} {b / MB:.1f}" for name, b in zip(CATEGORIES, sizes[peak]) if b >= 0.05 * MB)
    print(f"peak of live tensors {live[peak] / MB:.1f} MB: {split}")
    rss_mb = resident_mb()[1]
    print(f"peak resident memory of the process {rss_mb:.0f} MB (the profiler's records included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
