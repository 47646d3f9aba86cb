"""How much of the envs' time the training loop hides behind training.

    python benchmarks/loop_overlap.py [--env dmc:cartpole_balance] [--preset dmc_vision size1m]
        [--steps 1600] [--warmup 1200] [key=value ...]

Trains the same short run twice, with the envs stepped inline and in worker processes
(``run.env_workers``), and reads the loop's own time split (``time/*_frac`` in
``metrics.jsonl``) after the first ``--warmup`` env steps (filling replay's first batch,
which training waits for, and compiling).
Per env step it prints the loop's wall time and the time spent training, acting, and
waiting for the envs. Inline, the wait is all of the envs' stepping; with workers it is
only what training did not cover, so

    hidden = 1 - wait(process) / wait(inline)

is the share of env time the overlap removed from the loop, and the inline run's
train + env is the wall time a loop without overlap would take. Both runs share the
machine's cores with their env workers: on a CPU, overlap gains most when training
leaves a core idle (``compute.threads`` below the core count). No evaluation, no saves
inside the timed stretch.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

from dreamrl.config import build_config, parse_overrides
from dreamrl.run.allocator import exec_with_jemalloc, tune_allocator
from dreamrl.run.logging import LOOP_PARTS, loop_seconds, read_metrics
from dreamrl.run.train import train

MODES = ("inline", "process")


def run_mode(
    mode: str, presets: list[str], overrides: dict[str, Any], out: Path, warmup: int
) -> dict[str, float]:
    config = build_config(presets, {**overrides, "run.env_workers": mode})
    print(f"training {config.run.steps:,} env steps with run.env_workers={mode} ...", flush=True)
    train(config, out / mode, out=io.StringIO(), progress=False)
    return loop_seconds(read_metrics(out / mode), since_step=warmup)


def main() -> int:
    exec_with_jemalloc()  # as the dreamrl command does
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="dmc:cartpole_balance")
    parser.add_argument("--preset", nargs="+", default=["dmc_vision", "size1m"])
    parser.add_argument("--steps", type=int, default=1600, help="env steps per run")
    parser.add_argument("--warmup", type=int, default=1200, help="env steps left out of the figures")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    tune_allocator()
    if args.warmup >= args.steps:
        parser.error(f"--warmup ({args.warmup}) must be below --steps ({args.steps})")
    overrides: dict[str, Any] = {
        "task": args.env,
        "run.steps": args.steps,
        "run.log_every": 0,
        "run.eval_every": 0,
        "run.eval_eps": 0,
        "run.save_every": 1e9,
        "run.diagnose": False,
        **parse_overrides(args.overrides),
    }
    config = build_config(args.preset, overrides)
    run, fill = config.run, config.batch_size * config.batch_length
    if args.warmup <= fill:
        parser.error(
            f"--warmup ({args.warmup}) must pass the {fill:,} env steps that fill replay's first batch"
        )
    results = {}
    with tempfile.TemporaryDirectory(prefix="dreamrl-overlap-") as tmp:
        for mode in MODES:
            results[mode] = run_mode(mode, args.preset, overrides, Path(tmp), args.warmup)
    print(
        f"\n{args.env}, presets {' '.join(args.preset)}: run.envs={run.envs}, "
        f"run.train_ratio={run.train_ratio:g}, compute.threads={config.compute.threads}; "
        f"timed from env step {args.warmup:,} to {args.steps:,}"
    )
    print(f"{'ms per env step':<16} {'wall':>7} {'train':>7} {'env wait':>8} {'act':>6}")
    per_step = {}
    for mode, t in results.items():
        per_step[mode] = {k: 1000 * t[k] / max(t["steps"], 1.0) for k in ("wall", *LOOP_PARTS)}
        p = per_step[mode]
        print(f"{mode:<16} {p['wall']:>7.1f} {p['train']:>7.1f} {p['env']:>8.1f} {p['act']:>6.1f}")
    inline, process = per_step["inline"], per_step["process"]
    hidden = 1 - process["env"] / inline["env"] if inline["env"] > 0 else float("nan")
    waits = f"wait {inline['env']:.1f} -> {process['env']:.1f} ms per env step"
    if hidden >= 0:
        print(f"env time hidden behind training: {100 * hidden:.0f}% ({waits})")
    else:  # an env cheaper than a round trip to its worker
        print(f"env time hidden behind training: none ({waits}): this env steps faster inline")
    print(
        f"wall per env step: process {process['wall']:.1f} ms against inline {inline['wall']:.1f} "
        f"(x{inline['wall'] / process['wall']:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
