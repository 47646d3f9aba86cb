"""Export a trained agent's policy step, write its spec, and check it against the library."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamrl.agents.dreamer import DreamerAgent
from dreamrl.config import ConfigError, validate
from dreamrl.config_tree import replace as replace_config
from dreamrl.export import CHECK_SOURCES, CHECK_STEPS, check, formats
from dreamrl.export.graph import PolicyStep
from dreamrl.export.spec import build_spec
from dreamrl.run.disk import write_atomic
from dreamrl.run.errors import RunError


@dataclass(frozen=True)
class Exported:
    """What :func:`export_policy` wrote, and its check."""

    path: Path  # the policy file
    spec_path: Path  # the JSON beside it
    spec: dict[str, Any]
    check: check.CheckResult | None  # None when the check was skipped


def spec_path_for(path: Path) -> Path:
    """The spec's path beside policy file ``path``: ``policy.onnx`` -> ``policy.onnx.json``
    (the format's suffix kept, so an ONNX and a TorchScript file side by side keep theirs)."""
    return path.with_name(path.name + ".json")


def exportable(agent: Any) -> DreamerAgent:
    """``agent`` as the exported graph computes: float32, eager (no compiled kernels),
    on the CPU; a copy with the same weights when it is not already so. Raises
    :class:`ConfigError` for an agent whose acting the exporters cannot write."""
    if not isinstance(agent, DreamerAgent):
        raise ConfigError(f"export writes DreamerV3 agents' policies, not a {type(agent).__name__}")
    if agent.config.agent.act != "actor":
        raise ConfigError(
            f"agent.act={agent.config.agent.act}: this agent acts by planning in its world model, which "
            "export does not write (a planner's sampled rollouts per step are no fixed graph); "
            "`dreamrl export --act actor` exports its actor instead"
        )
    compute = agent.config.compute
    if compute.precision == "float32" and not compute.compile and agent.device.type == "cpu":
        return agent
    config = validate(
        replace_config(
            agent.config,
            {"compute.precision": "float32", "compute.compile": False, "compute.device": "cpu"},
        )
    )
    copy = DreamerAgent(
        config, agent.obs_space, agent.act_space, "cpu", agent.obs_converter, agent.act_converter
    )
    copy.load_state_tensors(agent.state_tensors())
    copy.updates = agent.updates
    return copy


def export_policy(
    agent: Any,
    fmt: str,
    path: str | Path,
    *,
    origin: dict[str, Any] | None = None,
    check_on: str | None = "env",
    check_steps: int = CHECK_STEPS,
    seed: int | None = None,
    replay_dir: Path | None = None,
) -> Exported:
    """Write ``agent``'s deterministic policy step to ``path`` in format ``fmt`` (``onnx``
    or ``torchscript``), its spec beside it (:func:`spec_path_for`), and check that the
    file's actions equal the library's over ``check_steps`` steps of observations
    (``check_on``: ``env``, episodes of the run's env from ``seed``; ``replay``, the
    steps held in ``replay_dir``; None: no check).

    A check that finds a difference removes both files and raises :class:`RunError`
    saying where; the spec of a passed check holds its result under ``check``.
    """
    formats.check_format(fmt)
    if check_on is not None and check_on not in CHECK_SOURCES:
        raise ConfigError(f"--check-on: {check_on!r} is not one of {', '.join(CHECK_SOURCES)}")
    if check_steps < 1:
        raise ConfigError(f"--check-steps: {check_steps} is out of range; allowed: 1 or more")
    agent = exportable(agent)
    path = Path(path)
    spec_path = spec_path_for(path)
    step = PolicyStep(agent).eval()
    formats.write(step, fmt, path)
    spec = build_spec(agent, step, fmt, path.name, origin or {})
    result = None
    if check_on is not None:
        result = run_check(agent, step, fmt, path, check_on, check_steps, seed, replay_dir)
        if not result.passed:
            path.unlink(missing_ok=True)
            raise RunError(
                f"the exported policy does not act as the library does ({result.line()}); removed {path}"
            )
        spec["check"] = result.to_json()
    write_atomic(spec_path, json.dumps(spec, indent=1) + "\n")
    return Exported(path, spec_path, spec, result)


def run_check(
    agent: DreamerAgent,
    step: PolicyStep,
    fmt: str,
    path: Path,
    check_on: str,
    steps: int,
    seed: int | None,
    replay_dir: Path | None,
) -> check.CheckResult:
    """Compare the file at ``path`` with the library's ``agent`` (see :mod:`.check`)."""
    if check_on == "replay":
        if replay_dir is None:
            raise ConfigError("--check-on replay: no run dir to read a replay from")
        recorded = check.record_replay(agent, replay_dir, steps)
    else:
        from dreamrl.envs import TEST_STREAM, env_seed

        recorded = check.record_env(
            agent, steps, env_seed(agent.config.seed if seed is None else seed, TEST_STREAM, 0)
        )
    runner = formats.load(fmt, path, [t.name for t in step.inputs], [t.name for t in step.outputs])
    return check.compare(recorded, runner, step, formats.RUNTIMES[fmt])
