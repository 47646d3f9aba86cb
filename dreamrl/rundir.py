"""Every path of a run dir and of the checkpoints inside it; no other module spells them.

A run dir is what ``dreamrl train --logdir DIR`` writes::

    DIR/config.json                  the resolved config (what a resume must match)
    DIR/metrics.jsonl                one JSON object a line, each with ``step``
    DIR/machines.jsonl               the machine each training session ran on, a line each
    DIR/tb/                          the same metrics for TensorBoard
    DIR/replay/                      replay chunks, ``{stream}-{start}-{length}.npz``
    DIR/replay/rank-<r>/             rank r's replay shard and its lock (``--ranks N``, r >= 1)
    DIR/checkpoints/ckpt-<step>/     agent.json, agent.safetensors, loop.json,
                                     loop.safetensors, manifest.json (written last);
                                     from N ranks also loop-rank<r>.json and
                                     loop-rank<r>.safetensors for r = 1 .. N-1
                                     a baseline's: agent.json, model.zip (SB3's),
                                     replay_buffer.npz (off-policy), loop.json, manifest.json
    DIR/eval/eval-<step>.json        results of ``dreamrl eval``
    DIR/diagnostics/                 diagnose-<step>.json and its pictures
    DIR/whatif/                      counterfactuals of ``dreamrl whatif``
    DIR/export/                      ``dreamrl export``'s policy files and their JSON specs
    DIR/report.html                  ``dreamrl report``'s page
    DIR/.lock                        locked by the process training the run, holding its PID

:meth:`RunDir.of` finds the run dir from either a run dir or one of its checkpoint dirs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.jsonl"
MACHINES = "machines.jsonl"
TENSORBOARD = "tb"
REPLAY = "replay"
CHECKPOINTS = "checkpoints"
EVALS = "eval"
DIAGNOSTICS = "diagnostics"
WHATIF = "whatif"
EXPORTS = "export"
REPORT = "report.html"
LOCK = ".lock"  # held by the one process writing the run (dreamrl.run.lock)

CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)$")
PARTIAL_CHECKPOINT_PREFIX = ".tmp-ckpt-"  # a save in progress, renamed into place when whole
AGENT_META = "agent.json"
AGENT_WEIGHTS = "agent.safetensors"
BASELINE_MODEL = "model.zip"  # a model-free baseline's SB3 model, in SB3's own format
BASELINE_REPLAY = "replay_buffer.npz"  # an off-policy baseline's replay buffer, plain arrays
LOOP_STATE = "loop.json"
LOOP_TENSORS = "loop.safetensors"
MANIFEST = "manifest.json"


def rank_loop_state(rank: int) -> str:
    """The checkpoint file of rank ``rank``'s loop counters (rank 0's is :data:`LOOP_STATE`)."""
    return LOOP_STATE if rank == 0 else f"loop-rank{rank}.json"


def rank_loop_tensors(rank: int) -> str:
    """The checkpoint file of rank ``rank``'s policy state and random generators (rank 0's
    policy state is :data:`LOOP_TENSORS`, its generators are in :data:`AGENT_WEIGHTS`)."""
    return LOOP_TENSORS if rank == 0 else f"loop-rank{rank}.safetensors"


# Results written beside the run, named by the env step of the checkpoint they come from.
EVAL_RESULT = re.compile(r"eval-(\d+)\.json")  # deterministic `dreamrl eval` summaries only


def diagnosis_name(step: int) -> str:
    """``diagnostics/`` file of the diagnostics at env step ``step``."""
    return f"diagnose-{step:012d}.json"


def openloop_name(step: int) -> str:
    """``diagnostics/`` picture of the open-loop prediction at env step ``step``."""
    return f"openloop-{step:012d}.png"


def whatif_stem(step: int, t: int) -> str:
    """``whatif/`` name (without suffix) of a counterfactual branched at ``t``."""
    return f"whatif-{step:012d}-t{t}"


def checkpoint_name(step: int) -> str:
    """The directory name of the checkpoint at env step ``step``."""
    return f"ckpt-{step:012d}"


def is_checkpoint_dir(path: Path) -> bool:
    """Whether ``path`` holds an agent as a checkpoint does (it may still be damaged)."""
    return (path / AGENT_META).is_file()


@dataclass(frozen=True)
class RunDir:
    """The paths of one run dir (none of them need exist yet)."""

    path: Path

    @classmethod
    def of(cls, path: str | Path) -> RunDir | None:
        """The run dir ``path`` is, or the one a checkpoint dir ``path`` sits in; None
        for a checkpoint outside any run dir, or a path that is neither."""
        path = Path(path)
        if is_checkpoint_dir(path):
            path = path.parent.parent
        run = cls(path)
        return run if run.config.is_file() else None

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def machines(self) -> Path:
        return self.path / MACHINES

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def replay(self) -> Path:
        return self.path / REPLAY

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    def replay_shard(self, rank: int) -> Path:
        """Rank ``rank``'s replay directory: :attr:`replay` for rank 0 (so that a run of one
        rank is laid out as any other), ``replay/rank-<r>`` for the others."""
        return self.replay if rank == 0 else self.replay / f"rank-{rank}"

    def shard_lock(self, rank: int) -> Path:
        """Locked by rank ``rank`` >= 1 while it trains, as :attr:`lock` is by rank 0."""
        return self.replay_shard(rank) / LOCK

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def evals(self) -> Path:
        return self.path / EVALS

    @property
    def diagnostics(self) -> Path:
        return self.path / DIAGNOSTICS

    @property
    def whatif(self) -> Path:
        return self.path / WHATIF

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def exports(self) -> Path:
        return self.path / EXPORTS

    def exported_policy(self, suffix: str) -> Path:
        """Where ``dreamrl export`` writes its policy file (``.onnx``, ``.pt``) by default."""
        return self.exports / f"policy{suffix}"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / checkpoint_name(step)

    def eval_result(self, env_steps: int, stochastic: bool = False, act: str = "actor") -> Path:
        """Where ``dreamrl eval`` saves its summary of the checkpoint at ``env_steps``; a
        stochastic evaluation, or one that acts by planning (``act="mpc"``), never
        overwrites the deterministic actor's."""
        suffix = ("-mpc" if act == "mpc" else "") + ("-stochastic" if stochastic else "")
        return self.evals / f"eval-{env_steps}{suffix}.json"
