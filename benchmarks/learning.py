"""Learning checks: train, then print evaluation return against env steps and wall time.

    python benchmarks/learning.py cartpole            # one check (see CHECKS)
    python benchmarks/learning.py all                 # every check, one after another
    python benchmarks/learning.py cartpole --out runs/bench key=value ...
    python benchmarks/learning.py cartpole_pixels_demo --preset wm_pixel   # presets after the check's

Each check trains with the CLI's own loop in ``<out>/<check>`` (rerunning resumes), with
evaluation of the deterministic policy on fresh seeds every ``eval_every`` env steps,
then prints the curve and whether the target was reached within the step budget. The
settings are in CHECKS below; anything not named there is the paper's default, except
the ``quick`` preset's learning rate (3e-4), which these CPU budgets need.

By default a check stops once two evaluations in a row reach its target (the curve
shows it holds); ``--full`` trains the whole budget. Each check's curve and verdict also
go to ``<out>/summary.json``, replacing that check's entry and keeping the others'.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dreamrl.config import build_config, parse_overrides
from dreamrl.diagnostics.hook import training_hooks
from dreamrl.run.allocator import exec_with_jemalloc, tune_allocator
from dreamrl.run.logging import read_metrics
from dreamrl.run.machine import machine_labels, read_sessions
from dreamrl.run.train import train
from dreamrl.rundir import RunDir, diagnosis_name


@dataclass(frozen=True)
class Check:
    env: str
    steps: int
    target: float
    presets: tuple[str, ...] = ("size1m", "quick")
    overrides: dict[str, Any] = field(default_factory=dict)


COMMON = {
    "run.envs": 1,
    "run.env_workers": "inline",
    "run.eval_eps": 10,
    "run.log_every": 60,
}

CHECKS: dict[str, Check] = {
    "cartpole": Check(
        "CartPole-v1",
        30_000,
        475.0,
        overrides={**COMMON, "run.train_ratio": 512, "run.eval_every": 2_500},
    ),
    "pendulum": Check(
        "Pendulum-v1",
        20_000,
        -250.0,
        overrides={**COMMON, "run.train_ratio": 512, "run.eval_every": 2_000},
    ),
    "cartpole_pixels": Check(
        "CartPole-v1",
        50_000,
        400.0,
        overrides={
            **COMMON,
            "env.pixels": True,
            "batch_length": 32,
            "run.train_ratio": 256,
            "run.eval_every": 2_500,
        },
    ),
    # The demo's settings (the fastest that learn CartPole from vectors) from pixels: the
    # comparison of world models (agent.wm=rssm|decoderfree|pixel, given as an override).
    "cartpole_pixels_demo": Check(
        "CartPole-v1",
        20_000,
        400.0,
        presets=("demo",),
        overrides={**COMMON, "env.pixels": True, "run.eval_every": 2_500},
    ),
    # The paper's DMC-from-pixels setup at the smallest size. An evaluation episode is
    # 1,000 rendered steps, so five episodes every 5,000 env steps keep evaluation
    # under a tenth of the run's time.
    "dmc_cartpole_balance": Check(
        "dmc:cartpole_balance",
        50_000,
        800.0,
        presets=("dmc_vision", "size1m", "quick"),
        overrides={**COMMON, "run.eval_eps": 5, "run.eval_every": 5_000},
    ),
}


# Imagined steps at which the curve shows the open-loop reward error of the diagnostics
# that ran after each evaluation (docs/diagnostics.md).
OPENLOOP_HORIZONS = (1, 5, 15)


def openloop_errors(run_dir: Path, step: int) -> dict[str, dict[str, float]]:
    """The open-loop reward and continue errors at each of ``OPENLOOP_HORIZONS`` of the
    diagnostics taken after the evaluation at ``step``: ``{"reward": {"1": ..., "5": ...,
    "15": ...}, "continue": {...}}``, empty where none ran (a horizon past the imagined
    ones is left out)."""
    path = RunDir(run_dir).diagnostics / diagnosis_name(int(step))
    if not path.exists():
        return {}
    diagnosis = json.loads(path.read_text())
    return {
        name: {str(h): float(diagnosis[key][h - 1]) for h in OPENLOOP_HORIZONS if h <= len(diagnosis[key])}
        for name, key in (("reward", "reward_error"), ("continue", "continue_error"))
    }


def curve(run_dir: Path) -> list[dict[str, Any]]:
    """Evaluation records ``[{step, return, std, minutes, openloop}]`` of a run dir."""
    out = []
    for record in read_metrics(run_dir):
        if "eval/return" in record:
            out.append(
                {
                    "step": record["step"],
                    "return": record["eval/return"],
                    "std": record["eval/return_std"],
                    "minutes": record.get("time/elapsed", float("nan")) / 60,
                    "openloop": openloop_errors(run_dir, record["step"]),
                }
            )
    return out


def report(
    name: str,
    check: Check,
    points: list[dict[str, float]],
    overrides: dict[str, Any],
    machines: list[str] | tuple[str, ...] = (),
) -> dict:
    """Print the curve and the verdict; ``machines``: what the run's sessions trained on
    (its wall minutes mean little without them)."""
    settings = ", ".join(f"{k}={v}" for k, v in overrides.items() if not k.startswith("run.eval"))
    print(f"\n{name}: {check.env}, presets {' '.join(check.presets)}, {settings}")
    print(f"target: mean eval return >= {check.target:g} within {check.steps:,} env steps")
    horizons = "/".join(map(str, OPENLOOP_HORIZONS))
    print(
        f"{'env steps':>10}  {'eval return':>18}  {'wall min':>8}  "
        f"open-loop error h={horizons}: reward; continue"
    )
    for p in points:
        errors = "; ".join(
            " / ".join(f"{e:.4f}" for e in p["openloop"].get(name, {}).values())
            for name in ("reward", "continue")
        )
        row = f"{p['step']:>10,}  {p['return']:>10.1f} ± {p['std']:<6.1f}  {p['minutes']:>8.1f}"
        print(f"{row}  {errors if p['openloop'] else '—'}")
    hit = next((p for p in points if p["return"] >= check.target and p["step"] <= check.steps), None)
    if hit:
        print(f"REACHED at {hit['step']:,} env steps after {hit['minutes']:.1f} min")
    else:
        best = max(points, key=lambda p: p["return"], default=None)
        best_text = f"best {best['return']:.1f} at {best['step']:,}" if best else "no evaluation"
        print(f"NOT REACHED within {check.steps:,} env steps ({best_text})")
    if machines:
        print(f"trained on: {'; '.join(machines)}")
    return {
        "check": name,
        "env": check.env,
        "target": check.target,
        "steps": check.steps,
        "reached_at": hit["step"] if hit else None,
        "curve": points,
        "settings": overrides,
        "machines": list(machines),
    }


def held_target(run_dir: Path, target: float, times: int = 2) -> bool:
    """True once the last ``times`` evaluations all reached ``target``."""
    points = curve(run_dir)
    return len(points) >= times and all(p["return"] >= target for p in points[-times:])


def run_check(name: str, out: Path, extra: dict[str, str], full: bool, presets: tuple[str, ...] = ()) -> dict:
    check = CHECKS[name]
    if presets:
        check = replace(check, presets=(*check.presets, *presets))
    overrides = {**check.overrides, **extra, "task": check.env}
    overrides.setdefault("run.steps", check.steps)
    config = build_config(check.presets, overrides)
    run_dir = out / name
    stop = None if full else (lambda _state: held_target(run_dir, check.target))
    train(config, run_dir, hooks=training_hooks(config, run_dir, stop), progress=sys.stdout.isatty())
    settings = {k: v for k, v in overrides.items() if k != "task"}
    return report(name, check, curve(run_dir), settings, machine_labels(read_sessions(run_dir)))


def main() -> int:
    exec_with_jemalloc()  # as the dreamrl command does: restarts with jemalloc unless DREAMRL_MALLOC=glibc
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("check", choices=[*CHECKS, "all"])
    parser.add_argument("--out", type=Path, default=Path("runs/bench"))
    parser.add_argument("--report-only", action="store_true", help="print the curve of an existing run")
    parser.add_argument("--full", action="store_true", help="train the whole budget, past the target")
    parser.add_argument(
        "--preset", action="append", default=[], metavar="NAME", help="a preset applied after the check's"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()  # overrides may come after --full or --out
    tune_allocator()  # where glibc stays (DREAMRL_MALLOC=glibc, or no libjemalloc)
    extra = parse_overrides(args.overrides)
    names = list(CHECKS) if args.check == "all" else [args.check]
    results = []
    for name in names:
        if args.report_only:
            check = CHECKS[name]
            run_dir = args.out / name
            machines = machine_labels(read_sessions(run_dir))
            results.append(report(name, check, curve(run_dir), {**check.overrides, **extra}, machines))
        else:
            results.append(run_check(name, args.out, extra, args.full, tuple(args.preset)))
    write_summary(args.out / "summary.json", results)
    return 0


def write_summary(path: Path, results: list[dict]) -> None:
    """Write ``results`` into the summary file, keeping the other checks' entries there."""
    kept: list[dict] = []
    if path.is_file():
        try:
            kept = [r for r in json.loads(path.read_text()) if isinstance(r, dict)]
        except (json.JSONDecodeError, TypeError):
            kept = []  # unreadable: rewritten from these results alone
    names = {r["check"] for r in results}
    merged = [r for r in kept if r.get("check") not in names] + results
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1))


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run saved a checkpoint on its way out
        print("interrupted: the same command resumes from the last checkpoint", file=sys.stderr)
        raise SystemExit(130) from None
