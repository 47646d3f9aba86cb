"""Sequence replay: contiguity, ring eviction, the online queue, chunk files on disk and
sampler state.

Every step carries its stream and step index (both +1, so an all-zero row can only be
an unwritten slot): ``vector = [stream + 1, step + 1, 7]`` and ``action = step + 1``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from dreamrl.replay import Replay
from dreamrl.spaces import Space

SPACES = {
    "vector": Space("float32", (3,)),
    "action": Space("int32", ()),
    "reward": Space("float32", ()),
    "is_first": Space("bool", ()),
    "is_last": Space("bool", ()),
    "is_terminal": Space("bool", ()),
}


def make(streams: int = 2, capacity: int = 40, length: int = 5, **kwargs) -> Replay:
    kwargs.setdefault("online", False)
    return Replay(SPACES, capacity=capacity, streams=streams, length=length, **kwargs)


def step(streams: int, t: int) -> dict[str, np.ndarray]:
    """Step ``t`` of every stream; episodes are 7 steps long."""
    s = np.arange(streams)
    return {
        "vector": np.stack([s + 1, np.full(streams, t + 1), np.full(streams, 7)], -1).astype(np.float32),
        "action": np.full(streams, t + 1, np.int32),
        "reward": (0.5 * t + s).astype(np.float32),
        "is_first": np.full(streams, t % 7 == 0),
        "is_last": np.full(streams, t % 7 == 6),
        "is_terminal": np.full(streams, t % 14 == 13),
    }


def fill(replay: Replay, steps: int, start: int = 0) -> None:
    for t in range(start, start + steps):
        replay.add(step(replay.streams, t))


def check_rows(batch: dict[str, np.ndarray], lo: int, hi: int) -> list[tuple[int, int]]:
    """Every row is a contiguous stretch of one stream within steps [lo, hi]; returns
    ``(stream, first step)`` per row."""
    out = []
    vec = batch["vector"]
    for row in range(vec.shape[0]):
        stream = vec[row, :, 0]
        steps = vec[row, :, 1].astype(np.int64) - 1
        assert (stream >= 1).all(), "read an unwritten slot"
        assert (stream == stream[0]).all(), "mixed streams in one sequence"
        assert (np.diff(steps) == 1).all(), f"not contiguous: {steps}"
        assert lo <= steps[0] and steps[-1] <= hi, (steps, lo, hi)
        assert (batch["action"][row] == steps + 1).all()
        assert (batch["is_first"][row] == (steps % 7 == 0)).all()
        assert np.allclose(batch["reward"][row], 0.5 * steps + stream[0] - 1)
        out.append((int(stream[0]) - 1, int(steps[0])))
    return out


def test_sample_shapes_and_dtypes():
    replay = make()
    fill(replay, 12)
    batch = replay.sample(4)
    assert batch["vector"].shape == (4, 5, 3) and batch["vector"].dtype == np.float32
    assert batch["action"].shape == (4, 5) and batch["action"].dtype == np.int32
    assert batch["is_first"].dtype == np.bool_ and batch["reward"].dtype == np.float32


def test_sampled_sequences_are_contiguous_stretches_of_one_stream():
    replay = make(streams=3, capacity=60, length=5, seed=1)  # 20 slots per stream
    fill(replay, 50)
    seen = set()
    for _ in range(20):
        seen.update(check_rows(replay.sample(16), lo=30, hi=49))
    # Uniform over every start 30..45 of every stream: all of them show up.
    assert {s for s, _ in seen} == {0, 1, 2}
    assert {t for _, t in seen} == set(range(30, 46))


def test_never_reads_unwritten_slots():
    replay = make(streams=2, capacity=40, length=5)  # 20 slots, only 7 written
    fill(replay, 7)
    assert replay.sequences().tolist() == [3, 3]
    seen = set()
    for _ in range(10):
        seen.update(check_rows(replay.sample(8), lo=0, hi=6))
    assert {t for _, t in seen} == {0, 1, 2}


def test_no_sequence_yet_raises():
    replay = make(length=5)
    fill(replay, 4)
    assert not replay.ready(1)
    with pytest.raises(RuntimeError):
        replay.sample(1)


def test_ring_eviction_keeps_newest_steps_per_stream():
    replay = make(streams=2, capacity=40, length=5)  # capacity // streams = 20 slots
    fill(replay, 50)
    assert len(replay) == 40
    assert replay.count.tolist() == [50, 50]
    for s in range(2):
        held = np.sort(replay.data["vector"][s, :, 1].astype(int) - 1)
        assert held.tolist() == list(range(30, 50))
        assert (replay.data["vector"][s, :, 0] == s + 1).all()
    for _ in range(10):
        check_rows(replay.sample(8), lo=30, hi=49)


def test_online_queue_serves_each_new_sequence_first():
    replay = make(streams=2, capacity=40, length=5, online=True, seed=3)
    fill(replay, 5)  # the first complete sequence of each stream
    rows = check_rows(replay.sample(3), lo=0, hi=4)
    assert rows[:2] == [(0, 0), (1, 0)]
    fill(replay, 5, start=5)  # the next, non-overlapping sequence
    rows = check_rows(replay.sample(2), lo=0, hi=9)
    assert rows == [(0, 5), (1, 5)]
    fill(replay, 2, start=10)  # not complete yet: nothing queued, samples are uniform
    assert len(replay.queue) == 0
    fill(replay, 3, start=12)
    rows = check_rows(replay.sample(4), lo=0, hi=14)
    assert rows[:2] == [(0, 10), (1, 10)]


def test_online_queue_skips_evicted_sequences():
    replay = make(streams=1, capacity=10, length=5, online=True)  # 10 slots
    fill(replay, 20)  # queues starts 0, 5, 10, 15; only 10..19 are still held
    rows = check_rows(replay.sample(2), lo=10, hi=19)
    assert rows == [(0, 10), (0, 15)]


def test_online_disabled_queues_nothing():
    replay = make(streams=2, length=5, online=False)
    fill(replay, 10)
    assert len(replay.queue) == 0


def chunk_names(directory: Path) -> list[str]:
    return sorted(p for p in os.listdir(directory) if p.endswith(".npz"))


def test_flush_load_round_trip(tmp_path):
    replay = make(streams=2, capacity=40, length=5, chunksize=4, directory=tmp_path)
    fill(replay, 50)
    replay.flush()
    fresh = make(streams=2, capacity=40, length=5, chunksize=4, directory=tmp_path)
    assert fresh.load() == 40
    assert fresh.count.tolist() == replay.count.tolist() == [50, 50]
    assert fresh.flushed.tolist() == [50, 50]
    assert len(fresh) == len(replay) == 40
    for key in SPACES:
        assert np.array_equal(fresh.data[key], replay.data[key]), key
    for _ in range(5):
        check_rows(fresh.sample(8), lo=30, hi=49)


def test_evicted_chunk_files_are_deleted(tmp_path):
    replay = make(streams=2, capacity=40, length=5, chunksize=4, directory=tmp_path)
    fill(replay, 50)
    replay.flush()
    # The ring holds steps 30..49: a chunk is kept while any of its steps is held.
    starts = [(0, 28, 4), (0, 32, 4), (0, 36, 4), (0, 40, 4), (0, 44, 4), (0, 48, 2)]
    expected = [f"{s:03d}-{a:012d}-{n:06d}.npz" for s in (0, 1) for _, a, n in starts]
    assert chunk_names(tmp_path) == sorted(expected)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_chunks_are_written_as_they_fill(tmp_path):
    replay = make(streams=1, capacity=40, length=5, chunksize=4, directory=tmp_path)
    fill(replay, 9)
    assert chunk_names(tmp_path) == ["000-000000000000-000004.npz", "000-000000000004-000004.npz"]
    with np.load(tmp_path / "000-000000000004-000004.npz", allow_pickle=False) as npz:
        assert npz["action"].tolist() == [5, 6, 7, 8]
        assert set(npz.files) == set(SPACES)


def gap_setup(tmp_path: Path) -> Replay:
    """40 steps of one stream in a 20-slot ring, chunks of 4, then the chunk holding
    steps 24..27 removed: the newest contiguous run is 28..39."""
    replay = make(streams=1, capacity=20, length=5, chunksize=4, directory=tmp_path)
    fill(replay, 40)
    replay.flush()
    assert chunk_names(tmp_path)[0] == "000-000000000020-000004.npz"
    (tmp_path / "000-000000000024-000004.npz").unlink()
    fresh = make(streams=1, capacity=20, length=5, chunksize=4, directory=tmp_path)
    assert fresh.load() == 12
    return fresh


def test_load_after_gap_restores_only_the_newest_run(tmp_path):
    fresh = gap_setup(tmp_path)
    held = fresh.data["vector"][0, :, 1].astype(int) - 1
    written = sorted(int(t) for t in held if t >= 0)
    assert written == list(range(28, 40))  # chunk 20..23, before the gap, is not loaded
    assert fresh.count.tolist() == [40]


def test_load_after_gap_never_samples_outside_the_run(tmp_path):
    fresh = gap_setup(tmp_path)
    assert len(fresh) == 12
    for _ in range(5):
        check_rows(fresh.sample(16), lo=28, hi=39)


def test_same_seed_same_samples():
    a = make(streams=2, capacity=40, length=5, seed=11)
    b = make(streams=2, capacity=40, length=5, seed=11)
    c = make(streams=2, capacity=40, length=5, seed=12)
    for replay in (a, b, c):
        fill(replay, 30)
    batches = [[r.sample(8) for _ in range(3)] for r in (a, b, c)]
    for x, y in zip(batches[0], batches[1], strict=True):
        for key in SPACES:
            assert np.array_equal(x[key], y[key])
    pairs = zip(batches[0], batches[2], strict=True)
    assert any(not np.array_equal(x["vector"], z["vector"]) for x, z in pairs)


def test_state_restore_makes_next_sample_identical():
    replay = make(streams=2, capacity=40, length=5, online=True, seed=5)
    fill(replay, 15)
    replay.sample(2)  # drain part of the queue first
    saved = json.loads(json.dumps(replay.state()))  # checkpoints store it as JSON
    assert saved["count"] == [15, 15] and len(saved["queue"]) == 4
    first = replay.sample(8)
    replay.sample(8)  # move the generator and the queue further on
    replay.restore(saved)
    again = replay.sample(8)
    for key in SPACES:
        assert np.array_equal(first[key], again[key]), key
    check_rows(again, lo=0, hi=14)


def test_nbytes_and_ready():
    replay = make(streams=2, capacity=40, length=5)
    per_step = 3 * 4 + 4 + 4 + 3
    assert replay.nbytes() == 2 * 20 * per_step
    fill(replay, 9)
    assert not replay.ready(4)  # 18 steps < 4 * 5
    fill(replay, 1, start=9)
    assert replay.ready(4)


def test_a_step_before_an_episode_start_is_marked_last():
    """An episode cut off without is_last (a resumed run) still ends before the next
    is_first, so returns never bootstrap across the cut."""
    replay = make(streams=1, capacity=40, length=5)
    for t in range(12):
        data = step(1, t)
        data["is_last"][:] = False  # the run stopped mid-episode: no is_last was stored
        replay.add(data)
    batch = replay.sample(32)
    starts_next = np.zeros_like(batch["is_first"])
    starts_next[:, :-1] = batch["is_first"][:, 1:]
    assert starts_next.any()
    assert np.all(batch["is_last"][starts_next])
    assert not replay.data["is_last"].any()  # the stored data itself is unchanged


def test_saved_and_reloaded_replay_gives_the_same_next_batch(tmp_path):
    """Contents, episode boundaries, the online queue and the sampler's generator all
    survive a save and a load into a fresh replay: the next batch is identical."""
    replay = make(streams=2, capacity=40, length=5, online=True, seed=3, chunksize=4, directory=tmp_path)
    fill(replay, 23)
    replay.sample(2)
    replay.flush()
    saved = json.loads(json.dumps(replay.state()))
    fresh = make(streams=2, capacity=40, length=5, online=True, seed=99, chunksize=4, directory=tmp_path)
    fresh.load(until=saved["count"])
    fresh.restore(saved)
    for _ in range(3):
        a, b = replay.sample(8), fresh.sample(8)
        for key in SPACES:
            assert np.array_equal(a[key], b[key]), key


def test_replay_arrays_commit_memory_only_as_steps_are_written():
    from dreamrl.replay import lazy_zeros
    from dreamrl.run.train import resident_mb

    before = resident_mb()[0]
    frames = lazy_zeros((4, 80_000, 64, 64, 3), np.uint8)  # 3.9 GB of frames
    frames[:, :10] = 7
    sample = frames[:, 5:15].copy()  # reads written and never-written steps
    grown = resident_mb()[0] - before
    assert frames.shape == (4, 80_000, 64, 64, 3) and frames.flags.writeable
    assert (sample[:, :5] == 7).all() and (sample[:, 5:] == 0).all()
    assert grown < 200, f"{grown:.0f} MB resident for 40 written frames"
