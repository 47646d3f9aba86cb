"""Fresh episodes for ``dreamrl diagnose`` and ``dreamrl whatif``, and how a
counterfactual is written.

The episodes come from the agent's deterministic policy on a seed stream of their own,
which training and evaluation never use, so that every one of them is held out.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamrl.run.disk import write_atomic
from dreamrl.rundir import whatif_stem

if TYPE_CHECKING:
    from dreamrl.agents.base import Agent
    from dreamrl.diagnostics.whatif import WhatIf
    from dreamrl.run.evaluate import EvalResult

DIAG_STREAM = 3  # episode seeds of `dreamrl diagnose` / `dreamrl whatif`


def diagnostic_seeds(run_seed: int, seed: int, count: int) -> list[int]:
    """Seeds of ``count`` episodes on the diagnostics stream of ``seed``; ``seed`` 0
    stands for the run's own seed ``run_seed``."""
    from dreamrl.envs import env_seed

    return [env_seed(seed if seed else run_seed, DIAG_STREAM, i) for i in range(count)]


def record_episodes(agent: Agent, seeds: Sequence[int], envs: int = 4) -> EvalResult:
    """One episode per seed with ``agent``'s deterministic policy on its config's
    evaluation env, each recorded whole (:func:`dreamrl.run.evaluate.evaluate`)."""
    from dreamrl.envs import make_env
    from dreamrl.run.evaluate import evaluate

    maker = functools.partial(make_env, agent.config, None, "eval")
    return evaluate(agent, maker, seeds, envs, record=True)


def write_whatif(
    result: WhatIf, out_dir: Path, step: int, image_keys: Sequence[str]
) -> tuple[Path, Path, dict[str, Any]]:
    """Write counterfactual ``result`` (from the checkpoint at env step ``step``) into
    ``out_dir``: its picture and a JSON record that names the picture, which is where
    ``dreamrl report`` finds both. Returns the JSON's path, the picture's and the record."""
    from dreamrl.diagnostics.whatif import whatif_picture

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = whatif_stem(step, result.t)
    picture = out_dir / f"{stem}.png"
    write_atomic(picture, whatif_picture(result, list(image_keys)))
    record = {**result.as_dict(), "image": picture.name, "step": step}
    path = out_dir / f"{stem}.json"
    write_atomic(path, json.dumps(record, indent=1))
    return path, picture, record
