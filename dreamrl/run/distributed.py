"""Data-parallel training on torch.distributed: one training loop per rank, started by torchrun.

``torchrun --nproc-per-node N -m dreamrl train ...`` (or ``dreamrl train --ranks N``, which
calls torchrun's launcher itself, :mod:`dreamrl.run.launch`) runs the loop of
:func:`dreamrl.run.train.train` in every rank. :func:`joined` turns torchrun's environment
into :class:`Ranks` (gloo between CPU processes, NCCL between GPUs, one GPU a rank), which
the loop is handed and asks at a few points:

- each rank steps its own ``run.envs`` envs, seeded by their index over all the ranks
  (rank r's env i is env ``r * run.envs + i`` of the run), and fills its own replay shard,
  ``replay/`` for rank 0 and ``replay/rank-<r>/`` for the others, sampled with a random
  stream of its own;
- each rank trains on a batch of ``batch_size`` sequences from its shard; the agent
  averages the gradients over the ranks before its optimiser (and takes the return
  percentiles over every rank's batch), so each rank applies the update one process would
  compute on all the ranks' batches together, and the replicas stay equal;
- ``env_steps`` counts the steps of every rank's envs, and one update (of every rank) is
  owed per ``ranks * batch_size * batch_length / run.train_ratio`` of them: replayed steps
  over env steps stays ``run.train_ratio`` for the job as a whole, as in one process with
  ``ranks * run.envs`` envs and batches ``ranks`` times as large;
- rank 0 alone logs, evaluates, runs the diagnostics and writes checkpoints, which hold
  the other ranks' loop state, policy state and generators, gathered to it; the others
  write nothing but their shard;
- what the loop decides by the clock (log, save) or by a signal (stop) the ranks agree
  on once per loop step, so that every collective meets every rank at the same point.

A rank that dies is seen by torchrun, which stops the others; a rank blocked on a
collective with a dead rank fails as soon as its connection closes (gloo), or after
:data:`COLLECTIVE_TIMEOUT`, with :class:`RankLostError`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from dreamrl.agents.base import Agent, DataParallel
from dreamrl.config import Config, ConfigError
from dreamrl.devices import resolve_device
from dreamrl.replay import Replay
from dreamrl.run.errors import RunError
from dreamrl.run.job import launched_ranks
from dreamrl.run.lock import RunDirBusyError, exclusive
from dreamrl.run.logging import Mean
from dreamrl.run.resume import REPLICA_PREFIX
from dreamrl.rundir import RunDir

# How long a rank waits in a collective for the others. Rank 0 evaluates, diagnoses and
# saves while the others wait at their next collective, so this bounds those too; a rank
# that dies is noticed far sooner (torchrun's monitor, a closed connection).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
# Gradients travel in flat buffers of at most this many bytes, all in flight at once.
BUCKET_BYTES = 64 * 2**20

T = TypeVar("T")


class RankLostError(RunError):
    """A collective failed: another rank stopped (its own message says why) or hung."""


@dataclass
class Ranks:
    """This process's place among the ranks of a data-parallel job, and the collectives
    the loop and the agent use. ``Ranks()`` is one process on its own: every method is
    then local and costs nothing."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # of collective tensors
    backend: str = "none"
    # Seconds spent in the agent's collectives since the last log, and updates they served.
    comm_seconds: float = 0.0
    comm_updates: int = 0

    @property
    def writer(self) -> bool:
        """Whether this rank writes the run dir (logs, checkpoints): rank 0."""
        return self.rank == 0

    # ------------------------------------------------------------------ the run's layout

    def first_env(self, envs: int) -> int:
        """The run-wide index of this rank's first env, with ``envs`` envs per rank."""
        return self.rank * envs

    def shard(self, run_dir: Path) -> Path:
        """This rank's replay directory."""
        return RunDir(run_dir).replay_shard(self.rank)

    def reseed(self, replay: Replay, seed: int) -> None:
        """Give rank r >= 1's replay a sampling stream of its own (rank 0 keeps the run's)."""
        if self.rank:
            replay.rng = np.random.default_rng(np.random.SeedSequence([seed, self.rank]))

    def join(self, agent: Agent) -> None:
        """Make ``agent`` this rank's replica (:class:`dreamrl.agents.base.DataParallel`)."""
        if self.size == 1:
            return
        if not isinstance(agent, DataParallel):
            raise ConfigError(f"{type(agent).__name__} cannot train on several ranks (it has no join_ranks)")
        agent.join_ranks(self)

    @contextlib.contextmanager
    def settle(self, run_dir: Path, ckpt: Path | None) -> Iterator[None]:
        """Once every rank is past its checks and rank 0 holds the run dir's lock: every
        other rank holds its shard's lock inside, and all resume from the same checkpoint.
        On any rank's failure every rank raises, before anything is written."""
        with contextlib.ExitStack() as held:
            problem = None
            if self.rank:
                shard = self.shard(run_dir)
                shard.mkdir(parents=True, exist_ok=True)
                try:
                    held.enter_context(exclusive(run_dir, RunDir(run_dir).shard_lock(self.rank)))
                except RunDirBusyError as e:
                    problem = f"rank {self.rank}: {e}"
            seen = self.all_gather_object((problem, ckpt.name if ckpt else None))
            problems = [p for p, _ in seen if p]
            if problems:
                raise RunDirBusyError(problems[0])
            names = [name for _, name in seen]
            if len(set(names)) > 1:
                listed = ", ".join(f"rank {r}: {n or '(none)'}" for r, n in enumerate(names))
                raise ConfigError(
                    f"the ranks see different checkpoints in {run_dir} ({listed}): every rank must "
                    "see the run dir on one shared filesystem"
                )
            yield

    def describe(self, config: Config, out: TextIO) -> None:
        """The job's shape, for the run's first lines."""
        if self.size == 1:
            return
        print(
            f"Ranks: {self.size} ({self.backend}), each with {config.run.envs} envs and a replay shard of "
            f"its own; global batch {self.size}x{config.batch_size}x{config.batch_length}; env steps "
            "count every rank's; rank 0 logs, evaluates and saves.",
            file=out,
        )

    # ------------------------------------------------------------------ agreeing

    def agree(self, **flags: bool) -> dict[str, bool]:
        """Each flag true if it is true on any rank (one collective for all of them)."""
        if self.size == 1:
            return flags
        values = torch.tensor([int(v) for v in flags.values()], dtype=torch.int32, device=self.device)
        with self._collective("agree"):
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return dict(zip(flags, (bool(v) for v in values.tolist())))

    def all(self, flag: bool) -> bool:
        """Whether ``flag`` is true on every rank."""
        if self.size == 1:
            return flag
        return not self.agree(no=not flag)["no"]

    def from_writer(self, value: T) -> T:
        """Rank 0's ``value``, on every rank."""
        if self.size == 1:
            return value
        box = [value]
        with self._collective("broadcast"):
            dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def all_gather_object(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.size == 1:
            return [value]
        out: list[Any] = [None] * self.size
        with self._collective("all_gather_object"):
            dist.all_gather_object(out, value)
        return out

    def gather_object(self, value: T) -> list[T]:
        """Every rank's ``value`` in rank order on rank 0; ``[]`` on the others."""
        if self.size == 1:
            return [value]
        out: list[Any] | None = [None] * self.size if self.writer else None
        with self._collective("gather_object"):
            dist.gather_object(value, out, dst=0)
        return out or []

    # ------------------------------------------------------------------ what the loop gathers

    def means(self, *means: Mean) -> dict[str, float]:
        """The running means of every rank pooled (on rank 0; ``{}`` on the others), which
        are then reset; with several ranks also ``dist/*``: rank 0's communication time."""
        if self.size == 1:
            return {k: v for m in means for k, v in m.result().items()}
        local = [(dict(m.sums), dict(m.counts)) for m in means]
        for m in means:
            m.result()
        parts = self.gather_object(local)
        out = {}
        for i in range(len(means)):
            sums: dict[str, float] = defaultdict(float)
            counts: dict[str, int] = defaultdict(int)
            for rank_parts in parts:
                for key, value in rank_parts[i][0].items():
                    sums[key] += value
                    counts[key] += rank_parts[i][1][key]
            out.update({k: sums[k] / counts[k] for k in sums})
        if parts:
            out["dist/ranks"] = float(self.size)
            if self.comm_updates:
                out["dist/comm_ms"] = 1000 * self.comm_seconds / self.comm_updates
        self.comm_seconds, self.comm_updates = 0.0, 0
        return out

    def replicas(
        self, loop: dict[str, Any], tensors: Mapping[str, torch.Tensor], agent: Agent
    ) -> list[tuple[dict[str, Any], dict[str, torch.Tensor]]]:
        """The (loop state, tensors) of ranks 1, 2, ... for rank 0's checkpoint; ``[]`` on
        the other ranks and in one process. Each rank's tensors are its policy state and,
        under ``agent.``, its agent's generators."""
        if self.size == 1:
            return []
        assert isinstance(agent, DataParallel)
        mine = {k: v.detach().cpu() for k, v in tensors.items()}
        mine.update({REPLICA_PREFIX + k: v.cpu() for k, v in agent.replica_tensors().items()})
        return self.gather_object((loop, mine))[1:]

    # ------------------------------------------------------------------ what the agent asks

    def average_gradients(self, params: list[torch.Tensor], finite: bool) -> bool:
        """Each gradient replaced by its mean over the ranks (a missing one counts as
        zeros, and stays missing only where every rank's is). Returns whether ``finite``
        holds on every rank: if not, no rank applies this update."""
        start = time.perf_counter()
        grads = [p.grad for p in params]
        present = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        flags = torch.tensor([float(not finite)] + [float(g is not None) for g in grads], device=self.device)
        buckets = _buckets(present, BUCKET_BYTES)
        flats = [torch.cat([t.reshape(-1) for t in bucket]) for bucket in buckets]
        with self._collective("all_reduce"):
            works = [dist.all_reduce(flags, async_op=True)]
            works += [dist.all_reduce(flat, async_op=True) for flat in flats]
            for work in works:
                assert work is not None
                work.wait()
        flags = flags.cpu()
        everywhere = not flags[0]
        if everywhere:
            for bucket, flat in zip(buckets, flats):
                flat.div_(self.size)
                offset = 0
                for t in bucket:
                    t.copy_(flat[offset : offset + t.numel()].view_as(t))
                    offset += t.numel()
            for p, g, seen in zip(params, present, flags[1:].tolist()):
                p.grad = g if seen else None
        self.comm_seconds += time.perf_counter() - start
        self.comm_updates += 1
        return bool(everywhere)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x`` ``[N, ...]`` concatenated in rank order ``[size * N, ...]``."""
        if self.size == 1:
            return x
        start = time.perf_counter()
        parts = [torch.empty_like(x) for _ in range(self.size)]
        with self._collective("all_gather"):
            dist.all_gather(parts, x.contiguous())
        self.comm_seconds += time.perf_counter() - start
        return torch.cat(parts)

    def broadcast(self, tensors: list[torch.Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's."""
        if self.size == 1:
            return
        with self._collective("broadcast"):
            for t in tensors:
                dist.broadcast(t, src=0)

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        """Turn a failed collective into :class:`RankLostError`."""
        try:
            yield
        except RuntimeError as e:  # DistBackendError, DistNetworkError, a timeout: all RuntimeErrors
            first = _first_sentence(str(e)) or type(e).__name__
            raise RankLostError(
                f"{what} with the other ranks failed ({first}); "
                "another rank stopped or hung (its own error says which and why). Rerun the same "
                "command to resume from the newest checkpoint."
            ) from None


def _first_sentence(message: str) -> str:
    """A backend's error without its source location (``[.../pair.cc:553] ``) and advice."""
    lines = message.strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else ""
    return text.split(". ")[0]


def _buckets(tensors: Sequence[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """``tensors`` in order, cut into runs of one dtype and at most ``limit`` bytes each
    (a larger tensor is a run of its own)."""
    out: list[list[torch.Tensor]] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        if not out or out[-1][0].dtype != t.dtype or size + nbytes > limit:
            out.append([])
            size = 0
        out[-1].append(t)
        size += nbytes
    return out


@contextlib.contextmanager
def joined(config: Config, environ: Mapping[str, str] = os.environ) -> Iterator[Ranks]:
    """This process's :class:`Ranks` for training ``config``: from torchrun's environment
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous it set up), joined to the
    process group for as long as the block runs; ``Ranks()`` outside torchrun or when the
    job has one rank. On a GPU each rank takes GPU ``LOCAL_RANK`` and NCCL; on a CPU, gloo."""
    size = launched_ranks(environ)
    if size == 1:
        yield Ranks()
        return
    rank, local = int(environ["RANK"]), int(environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.compute.device)
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=COLLECTIVE_TIMEOUT)
    yield Ranks(rank, size, device if backend == "nccl" else torch.device("cpu"), backend)
    # Left to the process's exit after an error: tearing down with a dead rank can block.
    dist.destroy_process_group()
