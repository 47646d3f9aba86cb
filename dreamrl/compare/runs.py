"""Which runs a comparison holds, which of them are done, and training the rest.

A comparison is agents x seeds on one env. An agent is named by a preset (``dreamer`` is
the run with no extra preset; ``a+b`` stacks two), applied after the comparison's
common presets; each run lives in ``DIR/<agent>/seed<k>``. A run is *done* when its
newest checkpoint is at ``run.steps``; rerunning a comparison trains only the runs that
are not, each resuming from its own checkpoint (as rerunning ``dreamrl train`` does).

Runs train one after another in this process through :func:`dreamrl.agents.trainer_for`,
so the comparison never knows which agents exist; or ``parallel`` at a time, each a
``dreamrl train`` subprocess with ``compute.threads`` set to its share of the thread
budget, its output in ``DIR/<agent>/seed<k>.log``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from dreamrl.config import Config, ConfigError, build_config, from_dict
from dreamrl.presets import DOMAINS, OWN, PRESETS, SIZES
from dreamrl.rundir import RunDir

DREAMER = "dreamer"  # the agent with no extra preset


def agent_presets(agent: str) -> list[str]:
    """The presets an agent name stands for: none for ``dreamer``, else its ``+``-parts."""
    return [] if agent == DREAMER else agent.split("+")


def check_agents(agents: Sequence[str]) -> None:
    """ConfigError for an empty list, a repeated agent, or a name that is not a preset."""
    if not agents:
        raise ConfigError("--agents: name at least one agent (dreamer, or a preset)")
    seen = set()
    for agent in agents:
        if agent in seen:
            raise ConfigError(f"--agents: {agent} is named twice")
        seen.add(agent)
        unknown = [p for p in agent_presets(agent) if p not in PRESETS]
        if unknown:
            known = ", ".join([DREAMER, *sorted(PRESETS)])
            raise ConfigError(f"--agents: {', '.join(unknown)} is not an agent; agents are presets: {known}")


def agent_of(config: Config) -> str:
    """The agent name of an existing run, from its presets: those that are not a size, a
    domain or one of dreamrl's own budgets (``debug``, ``demo``, ...), joined by ``+``;
    ``dreamer`` if none."""
    common = {*SIZES, *DOMAINS, *OWN}
    named = [p for p in config.presets if p not in common]
    return "+".join(named) or DREAMER


@dataclass(frozen=True)
class RunSpec:
    """One run of a comparison: an agent, a seed, its config and its run dir."""

    agent: str
    seed: int
    config: Config
    run_dir: Path
    args: tuple[str, ...]  # the `dreamrl train` arguments that build the same config

    @property
    def log(self) -> Path:
        """Where a subprocess run's output goes (beside its run dir)."""
        return self.run_dir.parent / f"{self.run_dir.name}.log"


ORDERS = ("agents", "seeds")


def plan(
    out: Path,
    env: str,
    agents: Sequence[str],
    seeds: int,
    steps: int | None,
    presets: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    order: str = "agents",
) -> list[RunSpec]:
    """Every run of the comparison, seeds ``0 .. seeds-1`` of each agent, in the order
    they train: agent by agent (``order="agents"``: an agent's seeds one after another),
    or seed by seed (``"seeds"``: every agent's seed 0, then every agent's seed 1, ..., so
    a comparison stopped halfway has a run of every agent). Each config is built (and
    validated) here, so a bad setting stops before any training."""
    from dreamrl.envs import check_task

    check_agents(agents)
    check_task(env)
    if seeds < 1:
        raise ConfigError(f"--seeds: {seeds} is not a positive number of seeds")
    if order not in ORDERS:
        raise ConfigError(f"--order: {order!r} is not an order; orders are {', '.join(ORDERS)}")
    overrides = dict(overrides or {})
    specs = []
    pairs = [(a, k) for a in agents for k in range(seeds)]
    if order == "seeds":
        pairs.sort(key=lambda pair: pair[1])  # stable: agents keep their order within a seed
    for agent, seed in pairs:
        names = [*presets, *agent_presets(agent)]
        settings = {**overrides, "task": env, "seed": str(seed)}
        if steps is not None:
            settings["run.steps"] = str(steps)
        config = build_config(names, settings)
        args = ["--env", env, "--seed", str(seed)]
        args += ["--preset", *names] if names else []
        args += [f"{k}={v}" for k, v in overrides.items()]
        if steps is not None:
            args += [f"run.steps={steps}"]
        specs.append(RunSpec(agent, seed, config, out / agent / f"seed{seed}", tuple(args)))
    return specs


def done_steps(run_dir: Path) -> int:
    """Env steps of a run dir's newest good checkpoint (0 without one)."""
    from dreamrl.run.checkpoint import latest_checkpoint, load_loop_state

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return 0
    try:
        return int(load_loop_state(ckpt)["env_steps"])
    except (OSError, ValueError, KeyError):
        return 0


def status(spec: RunSpec) -> str:
    """``done`` (checkpoint at ``run.steps``), ``partial`` (started) or ``new``."""
    if not RunDir(spec.run_dir).config.is_file():
        return "new"
    return "done" if done_steps(spec.run_dir) >= spec.config.run.steps else "partial"


def read_config(run_dir: Path) -> Config:
    """A run dir's saved config; ConfigError naming the dir if it has none."""
    path = RunDir(run_dir).config
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run dir (no {path.name})")
    return from_dict(json.loads(path.read_text()))


def train_in_process(spec: RunSpec, progress: bool, out: TextIO) -> None:
    """Train (or resume) one run here, as ``dreamrl train`` would."""
    from dreamrl.agents import trainer_for
    from dreamrl.config import warnings_for
    from dreamrl.diagnostics.hook import training_hooks
    from dreamrl.run.resume import check_config

    check_config(spec.run_dir, spec.config)
    for warning in warnings_for(spec.config):
        print(f"warning: {warning}", file=out)
    if spec.config.compute.threads:
        import torch

        torch.set_num_threads(spec.config.compute.threads)
    trainer = trainer_for(spec.config)
    trainer(spec.config, spec.run_dir, hooks=training_hooks(spec.config, spec.run_dir), progress=progress)


def train_command(spec: RunSpec, threads: int) -> list[str]:
    """The ``dreamrl train`` command of one run, with ``compute.threads``."""
    return [
        sys.executable,
        "-m",
        "dreamrl",
        "train",
        "--logdir",
        str(spec.run_dir),
        "--no-progress",
        *spec.args,
        f"compute.threads={threads}",
    ]


@dataclass
class Outcome:
    """What became of the runs a call trained: the failed ones with their reason."""

    trained: list[RunSpec]
    failed: list[tuple[RunSpec, str]]


Trainer = Callable[[RunSpec, bool, TextIO], None]


def run_all(
    specs: Sequence[RunSpec],
    out: TextIO,
    parallel: int = 1,
    threads: int = 0,
    progress: bool = True,
    train: Trainer = train_in_process,
    after_each: Callable[[Outcome], None] | None = None,
) -> Outcome:
    """Train every run that is not done: in this process one after another
    (``parallel=1``), or ``parallel`` subprocesses at a time sharing ``threads`` threads
    (0: every core). A failed run is reported and the others go on. ``after_each`` is
    called with the outcome so far whenever a run ends, finished or failed."""
    pending = [s for s in specs if status(s) != "done"]
    skipped = len(specs) - len(pending)
    print(
        f"{len(specs)} runs: {skipped} done already, {len(pending)} to train"
        + (f" ({parallel} at a time)" if parallel > 1 and pending else ""),
        file=out,
    )
    ended = after_each or (lambda outcome: None)
    if parallel <= 1:
        return _one_by_one(pending, out, progress, train, ended)
    budget = threads or os.cpu_count() or 1
    return _in_parallel(pending, out, parallel, max(1, budget // parallel), ended)


def describe_plan(specs: Sequence[RunSpec]) -> list[str]:
    """One line per run of a comparison, in training order: done, how far a started one
    got, or new, and for one not done the wall time it would take at its agent's pace so
    far (:func:`agent_pace`); then how many a rerun would train and the time they would
    take together, where every one of them has a pace. What ``compare --dry-run`` prints."""
    pace = agent_pace(specs)
    lines = []
    left: list[float] = []
    for spec in specs:
        state, total = status(spec), spec.config.run.steps
        if state == "done":
            lines.append(f"{spec.agent} seed {spec.seed}: done ({total:,} env steps)  {spec.run_dir}")
            continue
        done = done_steps(spec.run_dir) if state == "partial" else 0
        what = f"partial: {done:,} of {total:,} env steps" if done else f"new: {total:,} env steps"
        seconds = (total - done) * pace[spec.agent] if spec.agent in pace else math.nan
        left.append(seconds)
        if math.isfinite(seconds):
            what += f", about {_duration(seconds)} at this agent's pace"
        lines.append(f"{spec.agent} seed {spec.seed}: {what}  {spec.run_dir}")
    total_line = f"{len(specs)} runs: {len(specs) - len(left)} done, {len(left)} to train"
    if left and all(math.isfinite(s) for s in left):
        total_line += f", about {_duration(sum(left))} one after another"
    elif left:
        total_line += " (no time estimate: an agent has no run with a clock yet)"
    lines.append(total_line)
    return lines


def agent_pace(specs: Sequence[RunSpec]) -> dict[str, float]:
    """Wall seconds per env step of each agent over its runs so far (done or started):
    their ``time/elapsed`` clocks summed over their env steps summed. An agent with no run
    that has logged its clock is left out. A pace is a fact about the machine the runs
    ran on; evaluation and saving are in it."""
    from dreamrl.report.html import _read_records

    clock: dict[str, list[float]] = {}
    for spec in specs:
        records = _read_records(RunDir(spec.run_dir).metrics, [])
        times = [r["time/elapsed"] for r in records if isinstance(r.get("time/elapsed"), (int, float))]
        steps = max((r["step"] for r in records if isinstance(r.get("step"), int)), default=0)
        if times and steps > 0 and times[-1] > 0:
            seconds, total = clock.setdefault(spec.agent, [0.0, 0.0])
            clock[spec.agent] = [seconds + times[-1], total + steps]
    return {agent: seconds / steps for agent, (seconds, steps) in clock.items()}


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def _describe(spec: RunSpec) -> str:
    state = status(spec)
    if state == "partial":
        done = done_steps(spec.run_dir)
        return f"{spec.agent} seed {spec.seed}: resuming at {done:,} of {spec.config.run.steps:,} env steps"
    return f"{spec.agent} seed {spec.seed}: training {spec.config.run.steps:,} env steps"


def _one_by_one(
    pending: Sequence[RunSpec], out: TextIO, progress: bool, train: Trainer, ended: Callable[[Outcome], None]
) -> Outcome:
    from dreamrl.envs.pool import EnvError
    from dreamrl.run.checkpoint import CheckpointError
    from dreamrl.run.errors import RunError

    outcome = Outcome([], [])
    for i, spec in enumerate(pending):
        print(f"[{i + 1}/{len(pending)}] {_describe(spec)} into {spec.run_dir}", file=out, flush=True)
        try:
            train(spec, progress, out)
        except (RunError, EnvError, CheckpointError) as e:
            print(f"[{i + 1}/{len(pending)}] {spec.agent} seed {spec.seed} failed: {e}", file=out)
            outcome.failed.append((spec, str(e)))
        else:
            outcome.trained.append(spec)
        ended(outcome)
    return outcome


def _in_parallel(
    pending: Sequence[RunSpec], out: TextIO, parallel: int, threads: int, ended: Callable[[Outcome], None]
) -> Outcome:
    outcome = Outcome([], [])
    queue = list(pending)
    running: list[tuple[RunSpec, subprocess.Popen[bytes], Any]] = []
    started = 0
    try:
        while queue or running:
            while queue and len(running) < parallel:
                spec = queue.pop(0)
                started += 1
                spec.run_dir.parent.mkdir(parents=True, exist_ok=True)
                log = spec.log.open("ab")
                print(
                    f"[{started}/{len(pending)}] {_describe(spec)} ({threads} threads; output in {spec.log})",
                    file=out,
                    flush=True,
                )
                # A session of its own: a Ctrl-C reaches each run once, from here, below.
                proc = subprocess.Popen(
                    train_command(spec, threads), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                running.append((spec, proc, log))
            time.sleep(0.5)
            for item in list(running):
                spec, proc, log = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                log.close()
                if proc.returncode == 0:
                    outcome.trained.append(spec)
                    print(f"finished: {spec.agent} seed {spec.seed}", file=out, flush=True)
                else:
                    reason = f"dreamrl train exited with status {proc.returncode}; see {spec.log}"
                    outcome.failed.append((spec, reason))
                    print(f"failed: {spec.agent} seed {spec.seed}: {reason}", file=out, flush=True)
                ended(outcome)
    except KeyboardInterrupt:
        # Each run saves a checkpoint when interrupted: ask them all, and wait for them.
        for _, proc, _ in running:
            proc.send_signal(signal.SIGINT)
        for _, proc, log in running:
            proc.wait()
            log.close()
        raise
    return outcome
