"""Diagnostics after each evaluation of a training run, as a hook the loop is handed.

The loop (:mod:`dreamrl.run.train`) knows nothing of diagnostics: ``dreamrl train``
passes :func:`training_hooks`, which runs :func:`~dreamrl.diagnostics.run_diagnostics`
on the evaluation's episodes (never trained on), writes them into the run dir and
returns the headline figures for the metrics log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dreamrl.agents.base import Agent
from dreamrl.config import Config
from dreamrl.run.evaluate import EvalResult
from dreamrl.run.state import LoopState
from dreamrl.run.train import Hooks
from dreamrl.rundir import RunDir

# Steps kept of each evaluation episode for the diagnostics' windows (16 windows of
# context 16 + horizon 15 are cut from them): a bound on evaluation's memory.
RECORD_STEPS = 512


def headline_metrics(d: Mapping[str, Any]) -> dict[str, float]:
    """The ``diag/*`` metrics of a diagnosis ``d`` (:func:`~dreamrl.diagnostics.run_diagnostics`):
    what every world model reports (reward and continue errors, reconstruction errors,
    the fantasy gap of an agent that learns in imagination), and the KL, drift and latent
    usage of one with latent codes (the pixel predictor has none)."""
    metrics = {
        "diag/reward_error_1": d["reward_error"][0],
        "diag/reward_error_H": d["reward_error"][-1],
        "diag/continue_error_H": d["continue_error"][-1],
    }
    if "kl" in d:
        metrics.update({"diag/kl_1": d["kl"][0], "diag/kl_H": d["kl"][-1]})
    if "drift" in d:
        metrics["diag/drift_H"] = d["drift"][-1]
    if "latent_perplexity" in d:
        metrics["diag/latent_perplexity"] = d["latent_perplexity"]
    metrics.update({f"diag/recon_{k}": v for k, v in d["recon_error"].items()})
    gap = d.get("fantasy_gap")
    if gap:
        metrics.update({f"diag/fantasy_gap_{h}": g for h, g in zip(gap["horizons"], gap["gap"])})
        metrics["diag/real_return"] = gap["real"]
    return metrics


def after_eval(run_dir: Path) -> Callable[[Agent, EvalResult, int], dict[str, float] | None]:
    """The hook: diagnostics of ``agent`` on ``result``'s episodes, written under
    ``run_dir``; their headline figures as ``diag/*`` metrics."""

    def hook(agent: Agent, result: EvalResult, step: int) -> dict[str, float] | None:
        from dreamrl.diagnostics import run_diagnostics

        if getattr(agent, "wm", None) is None:
            return None  # an agent without a world model (a model-free baseline): nothing to diagnose

        d = run_diagnostics(agent, result.episodes, RunDir(run_dir).diagnostics, step)
        if d is None:
            return None  # every episode was shorter than one window
        return headline_metrics(d)

    hook.__name__ = "diagnostics"  # as a failure's warning names it
    return hook


def training_hooks(
    config: Config, run_dir: str | Path, stop: Callable[[LoopState], bool] | None = None
) -> Hooks:
    """What ``dreamrl train`` runs beside the loop: diagnostics after each evaluation when
    ``run.diagnose`` is on, and ``stop`` (a benchmark's early exit)."""
    if not config.run.diagnose:
        return Hooks(stop=stop)
    return Hooks(after_eval=(after_eval(Path(run_dir)),), stop=stop, record_steps=RECORD_STEPS)
