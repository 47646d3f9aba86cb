"""Data-parallel throughput: the same run at 1, 2, ... ranks on this machine.

    python benchmarks/distributed.py [--ranks 1 2] [--env CartPole-v1] [--preset debug]
        [--steps 4000] [--warmup 1500] [--threads 1] [key=value ...]

Trains one run per rank count with ``dreamrl train --ranks N`` (each rank one process of
``--threads`` torch threads; gloo on a CPU, NCCL with ``compute.device=cuda``) and reads
``metrics.jsonl`` after the first ``--warmup`` env steps (filling the first batch and
starting up). Per rank count it prints:

- env steps/s: env steps of every rank together, per second of wall time;
- updates/s: train steps per second (each rank takes one per update, on its own batch);
- samples/s: replayed steps per second over all ranks (updates/s x ranks x batch x length);
- comm ms/update: rank 0's time in the update's collectives (the gradient all-reduce and
  the return gather), and its share of the wall time. This includes waiting for the
  slowest rank to finish its backward pass; ``transfer ms`` is the all-reduce of a buffer
  of the model's size alone, between ranks that arrive together (the median of 50).

The train ratio holds at every rank count, so updates/s and env steps/s keep their ratio;
what more ranks buy is more of both in the same wall time, if the cores are there.
No evaluation, no saves inside the timed stretch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dreamrl.config import build_config, parse_overrides
from dreamrl.devices import resolve_device


def records(run_dir: Path, since_step: int) -> list[dict[str, Any]]:
    """The loop's periodic records (those with ``time/elapsed`` and ``train/updates``)
    from env step ``since_step`` on."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["step"] >= since_step and "train/updates" in record and "time/elapsed" in record:
            out.append(record)
    return out


def figures(run_dir: Path, since_step: int, ranks: int, batch: int, length: int) -> dict[str, float]:
    """Throughput between the first and the last record past ``since_step``."""
    got = records(run_dir, since_step)
    if len(got) < 2:
        raise SystemExit(f"{run_dir}: fewer than two log records after env step {since_step}; raise --steps")
    first, last = got[0], got[-1]
    seconds = last["time/elapsed"] - first["time/elapsed"]
    updates = (last["train/updates"] - first["train/updates"]) / seconds
    comm = [r["dist/comm_ms"] for r in got[1:] if "dist/comm_ms" in r]
    comm_ms = sum(comm) / len(comm) if comm else 0.0
    return {
        "ranks": ranks,
        "env_steps_per_s": (last["step"] - first["step"]) / seconds,
        "updates_per_s": updates,
        "samples_per_s": updates * ranks * batch * length,
        "comm_ms_per_update": comm_ms,
        "comm_share": comm_ms * updates / 1000,
        "seconds": seconds,
    }


def transfer_worker(numel: int, repeats: int, backend: str) -> None:
    """In a process torchrun started: time ``repeats`` all-reduces of ``numel`` float32s,
    each after a barrier; rank 0 prints the median in ms."""
    import os
    import time

    import torch
    import torch.distributed as dist

    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    buffer = torch.zeros(numel, device=device)
    seconds = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buffer)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    if dist.get_rank() == 0:
        print(f"{1000 * sorted(seconds)[len(seconds) // 2]:.3f}")
    dist.destroy_process_group()


def transfer_ms(numel: int, ranks: int, backend: str, repeats: int = 50) -> float:
    """The median all-reduce time of ``numel`` float32s between ``ranks`` processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    command += [__file__, "--transfer-worker", str(numel), str(repeats), backend]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> int:
    if sys.argv[1:2] == ["--transfer-worker"]:
        transfer_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return 0
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--preset", nargs="+", default=["debug"])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per run (all ranks together)")
    parser.add_argument("--warmup", type=int, default=1500, help="env steps left out of the figures")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--json", action="store_true", help="print one JSON object per rank count")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    overrides = [
        "run.log_every=2",
        "run.eval_every=0",
        "run.eval_eps=0",
        "run.save_every=1e9",
        "run.diagnose=false",
        f"compute.threads={args.threads}",
        *args.overrides,
    ]
    config = build_config(args.preset, {"task": args.env, **parse_overrides(overrides)})
    rows = []
    with tempfile.TemporaryDirectory(prefix="dreamrl-ddp-") as tmp:
        for ranks in args.ranks:
            run_dir = Path(tmp) / f"ranks{ranks}"
            command = [sys.executable, "-m", "dreamrl", "train", "--env", args.env, "--logdir", str(run_dir)]
            command += ["--preset", *args.preset, "--steps", str(args.steps), "--no-progress", *overrides]
            command += ["--ranks", str(ranks)]
            print(f"training {args.steps:,} env steps on {ranks} rank(s) ...", file=sys.stderr, flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            rows.append(figures(run_dir, args.warmup, ranks, config.batch_size, config.batch_length))
            if ranks > 1:
                from dreamrl.agent import Agent

                params = Agent.load(run_dir).param_count()
                backend = "nccl" if resolve_device(config.compute.device).type == "cuda" else "gloo"
                rows[-1]["transfer_ms"] = transfer_ms(params, ranks, backend)
                rows[-1]["params"] = params
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(
        f"{args.env}, presets {' '.join(args.preset)}, {args.threads} thread(s) a rank, "
        f"batch {config.batch_size}x{config.batch_length} a rank, train ratio {config.run.train_ratio:g}"
    )
    header = ("ranks", "env steps/s", "updates/s", "samples/s", "comm ms/update", "comm share", "transfer ms")
    print(" ".join(f"{h:>{max(len(h), 5)}}" for h in header))
    for r in rows:
        transfer = f"{r['transfer_ms']:.2f}" if "transfer_ms" in r else "-"
        print(
            f"{r['ranks']:>5} {r['env_steps_per_s']:>11.1f} {r['updates_per_s']:>9.2f} "
            f"{r['samples_per_s']:>9.0f} {r['comm_ms_per_update']:>14.2f} {100 * r['comm_share']:>9.1f}% "
            f"{transfer:>11}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
