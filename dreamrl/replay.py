"""Sequence replay: one ring per env stream, uniform sampling, chunk files on disk.

Each env stream writes its steps, in order, into its own ring of
``capacity // streams`` slots, so a sampled sequence is always a contiguous stretch of
one stream's history. A sequence may cross an episode boundary; the step where the new
episode starts carries ``is_first``, which resets the model's state there, so nothing
leaks from one episode into the next.

Sampling is uniform over every stored sequence start. With ``online`` every newly
completed, non-overlapping sequence of each stream is queued, and queued sequences
fill batches (oldest first) before uniform samples do, so fresh data is trained on at
least once soon after it arrives (the official replay's online queue).

Steps also go to disk under ``directory`` in chunk files of ``chunksize`` steps
(``{stream}-{start}-{length}.npz``, written atomically, read with
``allow_pickle=False``), so a resumed run finds its replay again; chunks that fall out
of the ring are deleted.
"""

from __future__ import annotations

import collections
import mmap
import os
import re
import shutil
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamrl.spaces import Space

CHUNK_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.npz$")


def step_bytes(spaces: Mapping[str, Space]) -> int:
    """Bytes one stored step takes."""
    return sum(int(np.dtype(s.dtype).itemsize) * s.size for s in spaces.values())


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo (bytes), or None where there is none."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_capacity(spaces: Mapping[str, Space], capacity: int, directory: Path) -> None:
    """ConfigError, with the numbers, if a replay of ``capacity`` steps cannot fit in
    the free RAM or in the free disk under ``directory`` (what it holds already counts
    as available: a resume reuses it)."""
    from dreamrl.config import ConfigError

    per_step = step_bytes(spaces)
    need = per_step * capacity
    gb = 1024**3
    ram = available_ram()
    if ram is not None and need > ram:
        fits = ram // max(per_step, 1)
        raise ConfigError(
            f"replay.size: {capacity:,} steps x {per_step:,} bytes = {need / gb:.1f} GB of replay, but only "
            f"{ram / gb:.1f} GB of RAM is available; lower replay.size to at most {fits:,} (or run.steps)"
        )
    existing = sum(f.stat().st_size for f in directory.glob("*.npz")) if directory.is_dir() else 0
    probe = directory if directory.exists() else next((p for p in directory.parents if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free + existing
    if need > free:
        fits = free // max(per_step, 1)
        raise ConfigError(
            f"replay.size: {capacity:,} steps x {per_step:,} bytes = {need / gb:.1f} GB of replay chunks, "
            f"but only {free / gb:.1f} GB of disk is free under {directory}; lower replay.size to at most "
            f"{fits:,}"
        )


def lazy_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zero array on an anonymous memory mapping of its own: pages are committed only
    as they are written, whatever the process's C allocator does.

    ``np.zeros`` asks ``calloc``, and whether a multi-GB block comes back lazily depends on
    the allocator: under jemalloc (dreamrl's, see :mod:`dreamrl.run.allocator`) a
    ``dmc_vision`` run's default 1.1M-step replay (12.6 GB of frames, 1,000 of them
    written) grew the process by 1.3 GB within 40 updates, against no growth with a
    300k-step replay or with glibc. A mapping of its own is lazy everywhere.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype).reshape(shape)


class Replay:
    """Replay of ``streams`` parallel step streams; samples ``[B, length]`` sequences."""

    def __init__(
        self,
        spaces: Mapping[str, Space],
        capacity: int,
        streams: int,
        length: int,
        online: bool = True,
        chunksize: int = 1024,
        directory: str | Path | None = None,
        seed: int = 0,
    ):
        self.spaces = dict(spaces)
        self.streams = streams
        self.length = length
        self.slots = max(capacity // streams, length)
        self.online = online
        self.chunksize = chunksize
        self.directory = Path(directory) if directory else None
        self.rng = np.random.default_rng(seed)
        self.data = {k: lazy_zeros((streams, self.slots, *s.shape), s.dtype) for k, s in spaces.items()}
        self.count = np.zeros(streams, np.int64)  # steps ever written per stream
        self.start = np.zeros(streams, np.int64)  # first step of the history held
        self.flushed = np.zeros(streams, np.int64)  # steps of each stream on disk
        self.queue: collections.deque[tuple[int, int]] = collections.deque()
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ writing

    def add(self, steps: Mapping[str, np.ndarray]) -> None:
        """Append one step to every stream: ``{key: [streams, ...]}``."""
        pos = self.count % self.slots
        rows = np.arange(self.streams)
        for key, array in self.data.items():
            array[rows, pos] = steps[key]
        self.count += 1
        if self.online:
            for s in np.flatnonzero(self.count % self.length == 0):
                self.queue.append((int(s), int(self.count[s]) - self.length))
        if self.directory:
            self.flush(force=False)

    def extend(self, stream: int, steps: Mapping[str, np.ndarray]) -> None:
        """Append a stretch of steps ``{key: [T, ...]}`` to one stream: a dataset's
        episodes, never queued for online training. ``T`` may not exceed the ring."""
        length = len(steps["is_first"])
        if length > self.slots:
            raise ValueError(f"{length:,} steps do not fit in a ring of {self.slots:,}")
        idx = np.arange(self.count[stream], self.count[stream] + length) % self.slots
        for key, array in self.data.items():
            array[stream, idx] = steps[key]
        self.count[stream] += length
        if self.directory:
            self.flush(force=False)

    def flush(self, force: bool = True) -> None:
        """Write full chunks to disk; with ``force`` also the partial tail of each stream."""
        if not self.directory:
            return
        wrote = False
        for s in range(self.streams):
            while self.count[s] - self.flushed[s] >= self.chunksize or (
                force and self.count[s] > self.flushed[s]
            ):
                start = int(self.flushed[s])
                size = int(min(self.chunksize, self.count[s] - start))
                self._write_chunk(s, start, size)
                self.flushed[s] = start + size
                wrote = True
        if wrote:
            self._delete_evicted()

    def _write_chunk(self, stream: int, start: int, size: int) -> None:
        assert self.directory is not None
        idx = np.arange(start, start + size) % self.slots
        arrays = {k: v[stream, idx] for k, v in self.data.items()}
        name = f"{stream:03d}-{start:012d}-{size:06d}.npz"
        tmp = self.directory / (name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk: no partial chunk is left behind
            raise

    def _delete_evicted(self) -> None:
        assert self.directory is not None
        for path, stream, start, size in self._chunk_files():
            if stream < self.streams and start + size <= self.count[stream] - self.slots:
                path.unlink(missing_ok=True)

    def _chunk_files(self) -> list[tuple[Path, int, int, int]]:
        assert self.directory is not None
        out = []
        for path in self.directory.iterdir():
            m = CHUNK_NAME.match(path.name)
            if m:
                out.append((path, int(m[1]), int(m[2]), int(m[3])))
        return sorted(out, key=lambda x: (x[1], x[2]))

    def load(self, until: Sequence[int] | None = None) -> int:
        """Refill the rings from the chunk files on disk; returns steps loaded.

        ``until`` (steps per stream, from a checkpoint) reconciles the replay with that
        checkpoint: chunks written after it are deleted and a chunk that runs past it
        is cut there, so no stored sequence spans the restart. Per stream the newest
        contiguous run of readable chunks is used: a missing or damaged chunk (counted
        in ``bad_chunks``) starts the history afresh after it.
        """
        self.bad_chunks: list[str] = []
        self.dropped_chunks = 0
        if not self.directory:
            return 0
        by_stream: dict[int, list[tuple[Path, int, int]]] = collections.defaultdict(list)
        for path, stream, start, size in self._chunk_files():
            if stream >= self.streams:
                continue
            limit = None if until is None else int(until[stream])
            if limit is not None and start >= limit:
                path.unlink(missing_ok=True)  # written after the checkpoint
                self.dropped_chunks += 1
                continue
            if limit is not None and start + size > limit:
                size = limit - start  # the part written after the checkpoint is left out
            by_stream[stream].append((path, start, size))
        loaded = 0
        for stream, chunks in by_stream.items():
            loaded += self._load_stream(stream, chunks)
        return loaded

    def _load_stream(self, stream: int, chunks: list[tuple[Path, int, int]]) -> int:
        """Load the newest contiguous readable run of ``chunks`` (sorted by start)."""
        end = chunks[-1][1] + chunks[-1][2]
        keep_from = end - self.slots
        first = end
        loaded = 0
        for path, start, size in reversed(chunks):
            if start + size != first or start + size <= keep_from:
                break  # a gap, or older than the ring holds
            try:
                arrays = self._read_chunk(path, size)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                self.bad_chunks.append(f"{path}: {e}")
                break
            lo = max(start, keep_from)
            sel = np.arange(lo, start + size)
            for k, v in arrays.items():
                self.data[k][stream, sel % self.slots] = v[sel - start]
            loaded += len(sel)
            first = lo
        self.count[stream] = end
        self.start[stream] = first
        # Chunks past the newest complete one are rewritten from there on the next flush.
        on_disk = [c for c in chunks if c[1] >= first]
        self.flushed[stream] = end
        for path, start, size in on_disk:
            m = CHUNK_NAME.match(path.name)
            if m and int(m[3]) != size:  # cut at the checkpoint: rewrite this chunk
                path.unlink(missing_ok=True)
                self.flushed[stream] = min(int(self.flushed[stream]), start)
        return loaded

    def _read_chunk(self, path: Path, size: int) -> dict[str, np.ndarray]:
        """A chunk's arrays (first ``size`` steps), checked against the replay's spaces."""
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k][:size] for k in self.data}
        for key, array in arrays.items():
            expected = (self.data[key].shape[2:], self.data[key].dtype)
            if array.shape[1:] != expected[0] or array.dtype != expected[1] or len(array) != size:
                raise ValueError(
                    f"{key} is {array.dtype}{list(array.shape)}, expected {size} steps of "
                    f"{expected[1]}{list(expected[0])}"
                )
        return arrays

    # ------------------------------------------------------------------ reading

    def oldest(self) -> np.ndarray:
        """Index of the oldest step held, per stream ``[streams]``."""
        return np.maximum(self.start, self.count - self.slots)

    def __len__(self) -> int:
        """Steps currently held."""
        return int((self.count - self.oldest()).sum())

    def sequences(self) -> np.ndarray:
        """Number of sampleable sequence starts per stream ``[streams]``."""
        return np.maximum(self.count - self.oldest() - self.length + 1, 0)

    def ready(self, batch_size: int) -> bool:
        """True once ``batch_size * length`` steps are held and a sequence exists."""
        return len(self) >= batch_size * self.length and self.sequences().sum() > 0

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch ``{key: [batch_size, length, ...]}`` of sequences."""
        streams = np.empty(batch_size, np.int64)
        starts = np.empty(batch_size, np.int64)
        filled = 0
        oldest = self.oldest()
        while self.queue and filled < batch_size:
            s, start = self.queue.popleft()
            if start >= oldest[s]:  # still held
                streams[filled], starts[filled] = s, start
                filled += 1
        n = batch_size - filled
        if n:
            counts = self.sequences()
            total = counts.sum()
            if total == 0:
                raise RuntimeError("replay holds no complete sequence yet")
            flat = self.rng.integers(0, total, n)
            cum = np.cumsum(counts)
            rows = np.searchsorted(cum, flat, side="right")
            streams[filled:] = rows
            starts[filled:] = oldest[rows] + flat - (cum[rows] - counts[rows])
        idx = (starts[:, None] + np.arange(self.length)[None]) % self.slots
        batch = {k: v[streams[:, None], idx] for k, v in self.data.items()}
        if "is_last" in batch and "is_first" in batch:
            # An episode cut off without its end (a run stopped and resumed) still
            # ends before the next one starts: returns never bootstrap across it.
            batch["is_last"][:, :-1] |= batch["is_first"][:, 1:]
        return batch

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Sampler state for checkpoints (the data itself lives in the chunk files)."""
        return {
            "rng": self.rng.bit_generator.state,
            "queue": [list(x) for x in self.queue],
            "count": self.count.tolist(),
            "start": self.start.tolist(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.queue = collections.deque((int(a), int(b)) for a, b in state["queue"])

    def nbytes(self) -> int:
        """Bytes the rings occupy once full."""
        return sum(v.nbytes for v in self.data.values())
