"""``dreamrl check-env``: build an env as training would and check it meets the contract.

Reports the spaces, each key's dtype, shape and value range over random-action steps,
the parts of the observation left out (those the model cannot read),
NaN/inf, whether a reset with the same seed gives the same episode, how episodes end,
and step speed. Problems are errors naming the key, the step, the shape, dtype or bound
that was wrong and what was expected.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dreamrl.config import Config
from dreamrl.envs.base import Env, Step
from dreamrl.spaces import STEP_KEYS, Space

STEP_DTYPES = {"reward": "float32", "is_first": "bool", "is_last": "bool", "is_terminal": "bool"}


@dataclass
class KeyStats:
    """Value range of one key over the checked steps."""

    low: float = math.inf
    high: float = -math.inf
    total: float = 0.0
    count: int = 0

    def add(self, value: np.ndarray) -> None:
        value = np.asarray(value, np.float64)
        finite = value[np.isfinite(value)]
        if finite.size:
            self.low = min(self.low, float(finite.min()))
            self.high = max(self.high, float(finite.max()))
            self.total += float(finite.sum())
            self.count += finite.size

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@dataclass
class CheckReport:
    task: str
    obs_space: dict[str, Space]
    act_space: Space
    stats: dict[str, KeyStats] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # parts of the observation left out or renamed
    steps: int = 0
    episodes: int = 0
    terminations: int = 0
    truncations: int = 0
    deterministic: bool | None = None
    steps_per_s: float = float("nan")
    reset_s: float = float("nan")

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "ok": self.ok,
            "obs_space": {k: s.to_json() for k, s in self.obs_space.items()},
            "act_space": self.act_space.to_json(),
            "ranges": {k: [s.low, s.high, s.mean] for k, s in self.stats.items()},
            "errors": self.errors,
            "warnings": self.warnings,
            "notes": self.notes,
            "steps": self.steps,
            "episodes": self.episodes,
            "terminations": self.terminations,
            "truncations": self.truncations,
            "deterministic": self.deterministic,
            "steps_per_s": self.steps_per_s,
            "reset_s": self.reset_s,
        }

    def text(self) -> str:
        lines = [f"check-env {self.task}"]
        act = self.act_space
        lines.append(
            "  actions: "
            + (
                f"discrete, {act.classes} choices"
                if act.discrete
                else f"continuous {list(act.shape)} in [-1, 1]"
            )
        )
        for key, space in self.obs_space.items():
            s = self.stats.get(key, KeyStats())
            kind = f"{space.dtype}{list(space.shape)}"
            lines.append(f"  {key}: {kind} range [{s.low:.4g}, {s.high:.4g}] mean {s.mean:.4g}")
        lines += [f"  note: {n}" for n in self.notes]
        r = self.stats.get("reward", KeyStats())
        lines.append(f"  reward: range [{r.low:.4g}, {r.high:.4g}] mean {r.mean:.4g}")
        lines.append(
            f"  {self.steps} steps, {self.episodes} episodes ended ({self.terminations} terminal, "
            f"{self.truncations} truncated)"
        )
        det = {None: "not checked", True: "yes", False: "NO"}[self.deterministic]
        lines.append(f"  same seed, same episode: {det}")
        lines.append(f"  speed: {self.steps_per_s:.1f} steps/s, reset {1000 * self.reset_s:.1f} ms")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [f"  ERROR: {e}" for e in self.errors]
        lines.append("  OK" if self.ok else f"  {len(self.errors)} problem(s) found")
        return "\n".join(lines)


def random_action(space: Space, rng: np.random.Generator) -> Any:
    """A uniformly random action in dreamrl's format."""
    if space.discrete:
        return np.int32(rng.integers(space.classes))
    return rng.uniform(-1, 1, space.shape).astype(np.float32)


def contract_errors(step: Step, obs_space: dict[str, Space], where: str) -> list[str]:
    """Every way ``step`` breaks the step-dict contract, as messages naming the key."""
    errors = []
    expected = set(obs_space) | set(STEP_KEYS)
    missing = expected - set(step)
    extra = set(step) - expected
    if missing:
        errors.append(f"{where}: missing keys {sorted(missing)}")
    if extra:
        errors.append(f"{where}: keys not in the observation space {sorted(extra)}")
    for key, space in obs_space.items():
        if key not in step:
            continue
        value = np.asarray(step[key])
        if value.shape != space.shape:
            errors.append(f"{where}: {key} has shape {value.shape}, the space says {space.shape}")
        if value.dtype != np.dtype(space.dtype):
            errors.append(f"{where}: {key} has dtype {value.dtype}, the space says {space.dtype}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).sum())
            errors.append(f"{where}: {key} has {bad} NaN/inf value(s)")
    for key, dtype in STEP_DTYPES.items():
        if key in step and np.asarray(step[key]).dtype != np.dtype(dtype):
            errors.append(f"{where}: {key} has dtype {np.asarray(step[key]).dtype}, expected {dtype}")
    if "reward" in step and not np.isfinite(step["reward"]):
        errors.append(f"{where}: reward is {step['reward']}")
    if step.get("is_terminal") and not step.get("is_last"):
        errors.append(f"{where}: is_terminal without is_last")
    return errors


def bound_errors(env: Env, stats: dict[str, KeyStats]) -> list[str]:
    """Observed values outside the bounds the env declares (gymnasium Boxes)."""
    bounds = getattr(env, "bounds", None)
    if bounds is None:
        return []
    errors = []
    for key, (low, high) in bounds().items():
        s = stats.get(key)
        if s is None or not s.count:
            continue
        lo, hi = float(np.min(low)), float(np.max(high))
        if s.low < lo or s.high > hi:
            seen = f"[{s.low:.4g}, {s.high:.4g}]"
            errors.append(f"{key}: values reach {seen} outside the declared bounds [{lo:.4g}, {hi:.4g}]")
    return errors


def same_episode(env: Env, seed: int, steps: int, rng_seed: int) -> tuple[bool, str]:
    """Reset twice with ``seed`` and replay the same actions: do the steps match?"""
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(rng_seed)
        trace = [env.reset(seed=seed)]
        for _ in range(steps):
            if trace[-1]["is_last"]:
                break
            trace.append(env.step(random_action(env.act_space, rng)))
        runs.append(trace)
    for t, (a, b) in enumerate(zip(*runs)):
        for key in a:
            if not np.array_equal(np.asarray(a[key]), np.asarray(b[key])):
                return False, f"{key} differs at step {t}"
    if len(runs[0]) != len(runs[1]):
        return False, f"episode lengths differ ({len(runs[0])} vs {len(runs[1])})"
    return True, ""


def check_env(config: Config, env: Env, steps: int = 500, seed: int = 0) -> CheckReport:
    """Run the checks on ``env`` (built from ``config``) for ``steps`` random steps."""
    report = CheckReport(config.task, env.obs_space, env.act_space)
    report.notes += env.obs_converter.notes
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    step = env.reset(seed=seed)
    report.reset_s = time.perf_counter() - start
    report.errors += contract_errors(step, env.obs_space, "reset")
    if not step.get("is_first"):
        report.errors.append("reset: is_first is not set on the first step of an episode")
    elapsed = 0.0
    for t in range(1, steps + 1):
        if step.get("is_last"):
            step = env.reset()
            report.errors += contract_errors(step, env.obs_space, f"reset after step {t}")[:3]
            continue
        start = time.perf_counter()
        step = env.step(random_action(env.act_space, rng))
        elapsed += time.perf_counter() - start
        report.steps += 1
        problems = contract_errors(step, env.obs_space, f"step {t}")
        if problems and len(report.errors) < 20:
            report.errors += problems
        if step.get("is_first"):
            report.errors.append(f"step {t}: is_first set on a step that is not a reset")
        for key in (*env.obs_space, "reward"):
            report.stats.setdefault(key, KeyStats()).add(step[key])
        if step.get("is_last"):
            report.episodes += 1
            report.terminations += bool(step.get("is_terminal"))
            report.truncations += not step.get("is_terminal")
    report.steps_per_s = report.steps / elapsed if elapsed else float("nan")
    report.errors += bound_errors(env, report.stats)
    deterministic, why = same_episode(env, seed + 1, min(steps, 100), seed)
    report.deterministic = deterministic
    if not deterministic:
        report.warnings.append(
            f"reset(seed) does not reproduce the episode ({why}): evaluation on fixed seeds is not repeatable"
        )
    for key, space in env.obs_space.items():
        s = report.stats.get(key)
        if s and s.count and s.low == s.high and not space.is_image:
            report.warnings.append(f"{key} is constant ({s.low:.4g}) over {report.steps} steps")
    return report
