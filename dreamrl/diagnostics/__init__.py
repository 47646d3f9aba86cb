"""World-model diagnostics: open-loop predictions, errors against imagination horizon,
latent usage and drift, counterfactual rollouts, and the pictures of them.

:func:`run_diagnostics` is what training (after each evaluation) and ``dreamrl
diagnose`` call: it takes held-out episodes (recorded by evaluation, never trained on),
cuts windows of ``context + horizon`` steps inside them, and writes
``diagnostics/diagnose-<step>.json`` and an open-loop picture into the run dir, with the
fantasy gap (:mod:`.fantasy`) of an agent that has an actor-critic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dreamrl.diagnostics.fantasy import fantasy_gap
from dreamrl.diagnostics.images import curves_png, openloop_frames, png_bytes
from dreamrl.diagnostics.metrics import diagnose, summarize, weakest
from dreamrl.diagnostics.rollout import Rollout, WorldModelView, rollout, windows
from dreamrl.diagnostics.whatif import WhatIf, whatif, whatif_picture
from dreamrl.run.disk import write_atomic
from dreamrl.rundir import diagnosis_name, openloop_name

__all__ = [
    "Rollout",
    "WhatIf",
    "WorldModelView",
    "diagnose",
    "fantasy_gap",
    "rollout",
    "run_diagnostics",
    "summarize",
    "weakest",
    "whatif",
    "whatif_picture",
    "windows",
]


def openloop_picture(agent: Any, r: Rollout, data: dict[str, np.ndarray], shown: int = 4) -> bytes:
    """PNG of the open-loop prediction of the first ``shown`` windows (of the first
    decoded image key, else of the first decoded vector key, else of the reward)."""
    decoded = [k for k in agent.obs_space if k in r.recon]
    if not decoded:  # a model that decodes nothing: its predicted rewards against the real ones
        K = r.context
        series = {
            "real reward": np.asarray(data["reward"][0, K:], np.float32),
            "predicted reward": r.reward[0].float().cpu().numpy(),
        }
        return curves_png("Open-loop reward prediction (first window; nothing is decoded)", series)
    image_keys = [k for k in decoded if agent.obs_space[k].is_image]
    if image_keys:
        key = image_keys[0]
        pred = r.recon[key][:shown].cpu().numpy()
        return png_bytes(openloop_frames(data[key][:shown], pred, r.context))
    key = decoded[0]
    true = np.asarray(data[key][0], np.float32).reshape(len(data[key][0]), -1)
    pred = r.recon[key][0].cpu().numpy().reshape(true.shape)
    series = {}
    for dim in range(min(true.shape[1], 4)):
        series[f"{key}[{dim}] real"] = true[:, dim]
        series[f"{key}[{dim}] predicted"] = pred[:, dim]
    return curves_png(f"Open-loop prediction of {key} (first window)", series, r.context)


def run_diagnostics(
    agent: Any,
    episodes: list[dict[str, np.ndarray]],
    out_dir: Path | None,
    step: int,
    context: int = 16,
    horizon: int = 15,
    sequences: int = 16,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Diagnostics of ``agent`` on windows of held-out ``episodes``; written to
    ``out_dir`` when given. None when no episode is long enough for one window."""
    data = windows(episodes, context + horizon, sequences, seed)
    if data is None:
        return None
    batch = agent.to_batch(data)
    r = rollout(WorldModelView(agent), batch, context, seed=seed)
    image_keys = {k for k, s in agent.obs_space.items() if s.is_image}
    cfg = agent.config.agent
    discount = 1 - 1 / cfg.horizon if cfg.contdisc else 1.0
    result = diagnose(r, batch, image_keys, discount)
    result["step"] = step
    if hasattr(agent, "ac"):  # an agent that learns a behaviour in the model: its fantasy gap
        gap = fantasy_gap(agent, episodes, context=context, seed=seed)
        if gap is not None:
            result["fantasy_gap"] = gap
    result["summary"] = summarize(result)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        picture = openloop_name(step)
        write_atomic(out_dir / picture, openloop_picture(agent, r, data))
        result["images"] = {"openloop": picture}
        write_atomic(out_dir / diagnosis_name(step), json.dumps(result, indent=1))
    return result
