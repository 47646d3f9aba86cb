"""dreamrl against sheeprl's DreamerV3, side by side: train steps/s and achieved GFLOP/s on this machine.

    python benchmarks/sheeprl_side_by_side.py [--venv runs/sheeprl-venv] [--threads 2] [--steps 3]
        [--preset size12m] [--sheeprl-exp dreamer_v3] [--sheeprl-algo dreamer_v3_XS] [--batch 16]
        [--length 64] [--vectors] [--precision float32|bfloat16] [--json-only]

One invocation runs both, one after the other, on the same machine with the same batch (16 sequences
of 64 steps by default), the same 64x64x3 image observations (or, with ``--vectors``, the same state
vectors) and discrete actions (CartPole-v1 seen
through its rgb render, two actions), the same torch thread count (``torch.set_num_threads`` in both
processes and ``OMP_NUM_THREADS`` in both environments), the same torch version and the same C
allocator and its settings (``--allocator``: glibc tuned by default, as most tables in
docs/performance.md were taken; ``jemalloc`` as dreamrl's CLI runs by default):

1. sheeprl (``sheeprl==0.8.4`` from PyPI), in a virtualenv of its own (``--venv``): it is never a
   dependency of dreamrl. A missing venv is created once (``pip install torch==<dreamrl's torch>``
   first, so that both run the same torch build, then sheeprl) and reused afterwards.
   ``benchmarks/sheeprl_step.py`` runs under its python, builds the agent as sheeprl's own training
   does (Hydra configs ``exp=<--sheeprl-exp> algo=<--sheeprl-algo>``) and times its ``train(...)``.
   With ``--sheeprl-exp dreamer_v3_5 --sheeprl-algo dreamer_v3_5_12M`` both run the same model (the
   official ``size12m``, 10,490,564 parameters in each) and their seconds per step compare directly.
2. dreamrl, in this process: ``dreamrl.run.bench.bench`` on the ``--preset`` config, the code behind
   ``dreamrl bench``.

One train step is one world-model update plus one actor-critic update in both. Both count a step's
FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` around one whole step, after the same number of
warm-up steps: the counter sees every matrix product and convolution, forward and backward, at torch's
dispatcher, whichever library issued it, so the two counts are made the same way and achieved GFLOP/s
(FLOPs per step / median step time) compare the implementations' use of the hardware even where their
models differ in size. Each process also measures a 2048x2048 float32 matrix product as the machine's
peak, for the fraction of it each reaches (the table's "of peak" is always of the float32 product).

``--precision bfloat16`` runs both with bfloat16 matrix products under ``torch.autocast``: dreamrl with
``compute.precision=bfloat16``, sheeprl with ``fabric.precision=bf16-mixed`` (Lightning Fabric's autocast
around each module's forward pass). The FLOP counts are the same products in either precision.

What differs, as each library runs it: sheeprl sets ``torch.set_float32_matmul_precision("high")`` as its
CLI does (on a CPU without TF32 units float32 products are unchanged; dreamrl keeps torch's default),
sheeprl's batch comes as float32 tensors (its sampler converts them before ``train``) while dreamrl's
step includes turning the replay's numpy arrays into tensors, and each step includes its own slow or
target critic update.

Prints a table, the ratios dreamrl / sheeprl of achieved GFLOP/s and of steps/s, and one JSON object as
the last line. Exits 1 when sheeprl cannot be installed or its step fails.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamrl.run.allocator import (
    JEMALLOC_CONF,
    exec_with_jemalloc,
    find_jemalloc,
    malloc_in_use,
    tune_allocator,
)

ROOT = Path(__file__).resolve().parent.parent
STEP_SCRIPT = Path(__file__).resolve().parent / "sheeprl_step.py"
SHEEPRL_VERSION = "0.8.4"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--venv",
        type=Path,
        default=ROOT / "runs" / "sheeprl-venv",
        help="sheeprl's virtualenv (made if missing)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of both")
    p.add_argument("--steps", type=int, default=3, help="train steps timed in each (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed train steps before counting and timing")
    p.add_argument("--preset", nargs="+", default=["size12m"], help="dreamrl preset(s)")
    p.add_argument("--sheeprl-algo", default="dreamer_v3_XS", help="sheeprl algo config")
    p.add_argument(
        "--sheeprl-exp",
        default="dreamer_v3",
        help="sheeprl exp config: dreamer_v3, or dreamer_v3_5 (its port of the Nature paper's DreamerV3, "
        "whose algo configs dreamer_v3_5_1M, _12M, ... are the official sizes: "
        "--sheeprl-exp dreamer_v3_5 --sheeprl-algo dreamer_v3_5_12M is the same 10.5M-parameter model as "
        "dreamrl's size12m)",
    )
    p.add_argument(
        "--vectors",
        action="store_true",
        help="both observe the env's state vector instead of its render (e.g. --preset size1m against "
        "--sheeprl-exp dreamer_v3_5 --sheeprl-algo dreamer_v3_5_1M)",
    )
    p.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        default="float32",
        help="compute precision of both: bfloat16 runs dreamrl with compute.precision=bfloat16 and sheeprl "
        "with fabric.precision=bf16-mixed (Lightning's torch.autocast around each module's forward)",
    )
    p.add_argument("--batch", type=int, default=16, help="sequences per batch, both")
    p.add_argument("--length", type=int, default=64, help="steps per sequence, both")
    p.add_argument(
        "--task", default="CartPole-v1", help="gymnasium id both observe through its 64x64 rgb render"
    )
    p.add_argument(
        "--allocator",
        choices=["tuned", "jemalloc", "default"],
        default="tuned",
        help="C allocator of both processes: glibc tuned as dreamrl's CLI sets it (mmap threshold at its "
        "maximum, no trimming), as DREAMRL_MALLOC=glibc runs dreamrl; jemalloc preloaded with timed page "
        "purging off, dreamrl's default (needs Debian's libjemalloc2); or glibc's defaults",
    )
    p.add_argument("--sheeprl-version", default=SHEEPRL_VERSION, help="sheeprl release to install from PyPI")
    p.add_argument(
        "--torch-spec",
        default=None,
        help="pip requirement for the venv's torch (default: torch==<the version dreamrl runs here>)",
    )
    p.add_argument(
        "--target", type=float, default=1.6, help="achieved GFLOP/s ratio to report as reached or not"
    )
    p.add_argument("--json-only", action="store_true", help="print only the JSON line")
    return p.parse_args(argv)


def say(args: argparse.Namespace, text: str) -> None:
    if not args.json_only:
        print(text, flush=True)


# --------------------------------------------------------------------------- sheeprl's venv


def venv_versions(python: Path) -> dict[str, str] | None:
    """The installed versions of sheeprl and torch in the venv of ``python``; None when either is missing."""
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({k: m.version(k) for k in ('sheeprl', 'torch')}))"
    )
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def run_logged(args: argparse.Namespace, cmd: list[str]) -> None:
    """Run an install command, its output shown; raises CalledProcessError on failure."""
    say(args, "$ " + " ".join(cmd))
    start = time.perf_counter()
    out = None if not args.json_only else subprocess.DEVNULL
    subprocess.run(cmd, check=True, stdout=out, stderr=out)
    say(args, f"  ({time.perf_counter() - start:.0f} s)")


def ensure_venv(args: argparse.Namespace, torch_version: str) -> Path:
    """sheeprl's venv, created and installed if missing; its python."""
    venv = args.venv.resolve()
    python = venv / "bin" / "python"
    want = {"sheeprl": args.sheeprl_version, "torch": torch_version}
    have = venv_versions(python) if python.exists() else None
    if have == want:
        say(args, f"sheeprl {have['sheeprl']} with torch {have['torch']}: reusing {venv}")
        return python
    torch_spec = args.torch_spec or f"torch=={torch_version}"
    if have is None:
        say(args, f"Setting up sheeprl {args.sheeprl_version} in {venv} (once; reused afterwards)")
    else:
        say(args, f"{venv} has {have}; installing {want}")
    start = time.perf_counter()
    try:
        if not python.exists():
            venv.parent.mkdir(parents=True, exist_ok=True)
            run_logged(args, [sys.executable, "-m", "venv", str(venv)])
        # torch first: dreamrl's own build, so that sheeprl's requirement (torch>=2.6) is met by it
        run_logged(args, [str(python), "-m", "pip", "install", torch_spec])
        run_logged(args, [str(python), "-m", "pip", "install", f"sheeprl=={args.sheeprl_version}"])
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"sheeprl install failed: {e}", file=sys.stderr)
        raise SystemExit(1) from e
    have = venv_versions(python)
    if have is None or have["sheeprl"] != args.sheeprl_version:
        print(f"sheeprl install failed: the venv has {have}", file=sys.stderr)
        raise SystemExit(1)
    if have["torch"] != torch_version:
        say(args, f"WARNING: the venv's torch is {have['torch']}, dreamrl's is {torch_version}")
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    say(args, f"Installed in {time.perf_counter() - start:.0f} s, {size / 2**30:.2f} GiB in {venv}")
    return python


def run_sheeprl(args: argparse.Namespace, python: Path) -> dict[str, Any]:
    """sheeprl_step.py's JSON record, run under sheeprl's venv with this benchmark's settings."""
    cmd = [
        str(python),
        str(STEP_SCRIPT),
        f"--exp={args.sheeprl_exp}",
        f"--algo={args.sheeprl_algo}",
        f"--env-id={args.task}",
        f"--batch={args.batch}",
        f"--length={args.length}",
        f"--threads={args.threads}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--allocator={args.allocator}",
        "--peak",
        *(["--vectors"] if args.vectors else []),
        *(["--override=fabric.precision=bf16-mixed"] if args.precision == "bfloat16" else []),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if args.allocator == "jemalloc":
        # This process was restarted with jemalloc (main); the child gets the same library and settings.
        env["LD_PRELOAD"] = str(find_jemalloc())
        env["MALLOC_CONF"] = os.environ.get("MALLOC_CONF", JEMALLOC_CONF)
    else:
        env.pop("LD_PRELOAD", None)
        env.pop("MALLOC_CONF", None)
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["VIRTUAL_ENV"] = str(python.parent.parent)
    say(args, f"\nsheeprl: {' '.join(cmd[1:])}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    record = None
    if proc.returncode == 0 and lines:
        try:
            record = json.loads(lines[-1])
        except ValueError:
            record = None
    if record is None:
        print(proc.stdout[-4000:], file=sys.stderr)
        print(proc.stderr[-8000:], file=sys.stderr)
        print(
            f"sheeprl's train step failed (exit code {proc.returncode}): its output is above", file=sys.stderr
        )
        raise SystemExit(1)
    say(args, f"  done in {time.perf_counter() - start:.0f} s")
    return record


# --------------------------------------------------------------------------- dreamrl


def run_dreamrl(args: argparse.Namespace) -> dict[str, Any]:
    """dreamrl bench's record for ``--preset`` on the same batch, images and threads."""
    import torch

    from dreamrl.config import build_config
    from dreamrl.run.bench import bench

    torch.set_num_threads(args.threads)
    overrides = {
        "task": args.task,
        "env.pixels": not args.vectors,
        "compute.threads": args.threads,
        "compute.precision": args.precision,
        "batch_size": args.batch,
        "batch_length": args.length,
        "compute.device": "cpu",
    }
    config = build_config(args.preset, overrides)
    say(args, f"\ndreamrl: bench presets {' '.join(args.preset)} {json.dumps(overrides)}")
    start = time.perf_counter()
    record = bench(config, train_steps=args.steps, warmup=args.warmup, env_steps=20)
    say(args, f"  done in {time.perf_counter() - start:.0f} s")
    record.update(
        implementation="dreamrl",
        torch_version=torch.__version__,
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        allocator=args.allocator,
        torch_threads=record["threads"],
    )
    return record


# --------------------------------------------------------------------------- report


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "implementation",
        "preset",
        "params",
        "GFLOP/step",
        "s/step",
        "steps/s",
        "GFLOP/s",
        "of peak",
        "peak RSS",
    ]
    body = [
        [
            r["implementation"],
            r["preset"],
            f"{r['params'] / 1e6:.1f}M",
            f"{r['gflop_per_step']:.1f}",
            f"{r['train_step_s']:.3f}",
            f"{r['train_steps_per_s']:.3f}",
            f"{r['achieved_gflops']:.1f}",
            f"{r['achieved_gflops'] / r.get('peak_gflops_float32', r['peak_gflops']):.0%}",
            f"{r['peak_rss_mb']:.0f} MB",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch starts its OpenMP pool in this process (dreamrl's run) and for the sheeprl child.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.allocator == "jemalloc":
        os.environ["DREAMRL_MALLOC"] = "jemalloc"
        exec_with_jemalloc()  # returns only where it was preloaded already or cannot be
        if malloc_in_use() != "jemalloc":
            print(
                "error: --allocator jemalloc needs libjemalloc (Debian: libjemalloc2);"
                " or use --allocator tuned",
                file=sys.stderr,
            )
            return 1
    elif malloc_in_use() != "glibc":
        print(f"error: --allocator {args.allocator}, but {malloc_in_use()} is preloaded", file=sys.stderr)
        return 1
    if args.allocator == "tuned":
        tune_allocator()
    torch_version = importlib.metadata.version("torch")
    python = ensure_venv(args, torch_version)
    sheeprl = run_sheeprl(args, python)
    dreamrl = run_dreamrl(args)

    sheeprl["preset"] = sheeprl["algo"]
    dreamrl["preset"] = " ".join(dreamrl["presets"])
    if sheeprl["torch_threads"] != dreamrl["torch_threads"]:
        say(
            args,
            f"WARNING: torch threads differ: sheeprl {sheeprl['torch_threads']}, "
            f"dreamrl {dreamrl['torch_threads']}",
        )
    ratios = {
        "achieved_gflops": dreamrl["achieved_gflops"] / sheeprl["achieved_gflops"],
        "train_steps_per_s": dreamrl["train_steps_per_s"] / sheeprl["train_steps_per_s"],
    }
    settings = {
        "batch": args.batch,
        "length": args.length,
        "observations": "vectors" if args.vectors else [64, 64, 3],
        "task": args.task,
        "threads": args.threads,
        "warmup": args.warmup,
        "steps": args.steps,
        "allocator": args.allocator,
        "precision": args.precision,
        "torch": torch_version,
    }
    observed = "state vectors" if args.vectors else "64x64x3 images (the env's render)"
    say(args, "")
    say(
        args,
        f"Batch {args.batch}x{args.length} of {observed} ({args.task}, discrete actions), "
        f"{args.precision}, torch threads {args.threads}, torch {torch_version}, allocator {args.allocator}, "
        f"median of {args.steps} steps after {args.warmup} warm-up; FLOPs by torch's FLOP counter in both",
    )
    say(args, table([sheeprl, dreamrl]))
    say(
        args,
        f"matmul peak (2048x2048 float32, best of 5): {sheeprl['peak_gflops']:.1f} GFLOP/s in sheeprl's "
        f"process, {dreamrl['peak_gflops_float32']:.1f} GFLOP/s in dreamrl's"
        + (
            f"; 'of peak' is of the float32 one (bfloat16 in dreamrl's: {dreamrl['peak_gflops']:.1f})"
            if args.precision != "float32"
            else ""
        ),
    )
    reached = "reached" if ratios["achieved_gflops"] >= args.target else "not reached"
    say(
        args,
        f"dreamrl / sheeprl: achieved GFLOP/s x{ratios['achieved_gflops']:.2f} "
        f"(target x{args.target:g}: {reached}), train steps/s x{ratios['train_steps_per_s']:.2f}",
    )
    print(json.dumps({"settings": settings, "sheeprl": sheeprl, "dreamrl": dreamrl, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
