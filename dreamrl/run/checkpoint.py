"""Checkpoints in a run dir: ``checkpoints/ckpt-<step>/``, written whole or not at all.

A checkpoint is assembled under a temporary name, every file synced, a manifest of
their sizes and SHA-256 digests written last, and only then renamed into place: a
directory named ``ckpt-*`` is complete, and its manifest tells a later reader whether
anything in it was damaged since. Older checkpoints are pruned only after the new one
exists. A failed save (an exception, a full disk) removes its temporary directory and
leaves the previous checkpoints as they were.

Loading reads only safetensors and JSON: nothing in a checkpoint can run code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from dreamrl.run.errors import RunError
from dreamrl.rundir import (
    AGENT_META,
    CHECKPOINT_NAME,
    LOOP_STATE,
    LOOP_TENSORS,
    MANIFEST,
    PARTIAL_CHECKPOINT_PREFIX,
    RunDir,
    rank_loop_state,
    rank_loop_tensors,
)

FORMAT = 1  # checkpoint layout version; readers refuse newer ones
SET_ASIDE = "-replaced"  # suffix of a checkpoint set aside while its step is saved again
T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and why."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoint directories ``[(step, path)]``, oldest first (not yet verified)."""
    root = RunDir(run_dir).checkpoints
    if not root.is_dir():
        return []
    out = []
    for path in root.iterdir():
        m = CHECKPOINT_NAME.match(path.name)
        if m and path.is_dir():
            out.append((int(m[1]), path))
        step = _set_aside_step(path)
        if step is not None:
            out.append((step, path))
    return sorted(out)


def _set_aside_step(path: Path) -> int | None:
    """The step of a checkpoint that :func:`_replace_dir` set aside and whose replacement
    never arrived (a crash between its two renames); None for any other path."""
    name = path.name
    if not (name.startswith(PARTIAL_CHECKPOINT_PREFIX) and name.endswith(SET_ASIDE)):
        return None
    original = path.with_name(name.removeprefix(PARTIAL_CHECKPOINT_PREFIX).removesuffix(SET_ASIDE))
    m = CHECKPOINT_NAME.match(original.name)
    return int(m[1]) if m and path.is_dir() and not original.exists() else None


def remove_partial_saves(run_dir: Path) -> list[Path]:
    """Delete temporary directories left by saves that never finished (a killed run)."""
    root = RunDir(run_dir).checkpoints
    removed = []
    if root.is_dir():
        for path in root.iterdir():
            if _set_aside_step(path) is not None:
                continue  # its replacement never arrived: it is still the checkpoint of its step
            if path.name.startswith(PARTIAL_CHECKPOINT_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def save_checkpoint(
    run_dir: Path,
    step: int,
    agent: Any,
    loop: dict[str, Any],
    keep: int,
    extra: dict[str, Any] | None = None,
    replicas: Sequence[tuple[dict[str, Any], dict[str, Any]]] = (),
) -> Path:
    """Write ``agent`` (its ``save(dir)``), the loop state and ``extra`` tensors as
    ``checkpoints/ckpt-<step>``, then prune all but the newest ``keep``. ``replicas`` are
    the (loop state, tensors) of ranks 1, 2, ... of a data-parallel run.

    Raises :class:`CheckpointError` on a full disk, naming the checkpoint kept.
    """
    final = RunDir(run_dir).checkpoint(step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{PARTIAL_CHECKPOINT_PREFIX}{step:012d}-{os.getpid()}"
    previous = list_checkpoints(run_dir)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        agent.save(tmp)
        (tmp / LOOP_STATE).write_text(json.dumps(loop))
        if extra:
            _save_tensors(extra, tmp / LOOP_TENSORS)
        for rank, (rank_loop, tensors) in enumerate(replicas, start=1):
            (tmp / rank_loop_state(rank)).write_text(json.dumps(rank_loop))
            _save_tensors(tensors, tmp / rank_loop_tensors(rank))
        write_manifest(tmp, step)
        _replace_dir(tmp, final)
        _fsync_dir(root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = previous[-1][1] if previous else None
            raise CheckpointError(
                f"disk full while writing checkpoint {final}: {e.strerror}. "
                f"The previous checkpoint {kept or '(none)'} is intact; free space and rerun to resume."
            ) from e
        raise
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _replace_dir(new: Path, final: Path) -> None:
    """Rename ``new`` to ``final``. A checkpoint already there (the same step saved again:
    training from a dataset takes no env step) is first set aside under another name
    and deleted only after; until then :func:`list_checkpoints` lists it under its step."""
    if not final.exists():
        os.rename(new, final)
        return
    aside = final.parent / f"{PARTIAL_CHECKPOINT_PREFIX}{final.name}{SET_ASIDE}"
    if aside.exists():
        shutil.rmtree(aside)
    os.rename(final, aside)
    os.rename(new, final)
    shutil.rmtree(aside, ignore_errors=True)


def _save_tensors(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(path))


def write_manifest(directory: Path, step: int | None = None) -> None:
    """Sync every file in ``directory`` and record its size and digest in the manifest,
    written last: a reader can then tell a whole checkpoint from a damaged one."""
    files = {}
    for f in sorted(directory.iterdir()):
        if f.name == MANIFEST:
            continue
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        files[f.name] = {"bytes": f.stat().st_size, "sha256": _digest(f)}
    manifest = {"format": FORMAT, "step": step, "files": files}
    with open(directory / MANIFEST, "w") as fh:
        fh.write(json.dumps(manifest, indent=1))
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(directory)


def verify_checkpoint(path: Path) -> None:
    """Raise :class:`CheckpointError` naming the file if ``path`` is incomplete,
    damaged (size or digest differs from its manifest) or from a newer format."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing (the checkpoint is incomplete)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{manifest_path}: unreadable ({e})") from None
    if manifest.get("format", 0) > FORMAT:
        raise CheckpointError(
            f"{manifest_path}: checkpoint format {manifest['format']} is newer than this dreamrl "
            f"reads ({FORMAT})"
        )
    for name, expected in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        size = f.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{f}: {size} bytes, the manifest says {expected['bytes']} (truncated?)")
        if _digest(f) != expected["sha256"]:
            raise CheckpointError(f"{f}: contents differ from the manifest's digest (corrupted)")


def latest_checkpoint(run_dir: Path, skipped: list[str] | None = None) -> Path | None:
    """The newest checkpoint that verifies. Damaged ones are passed over, and the
    reason for each goes into ``skipped`` when given."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            if skipped is not None:
                skipped.append(str(e))
            continue
        return path
    return None


def find_agent_dir(path: Path) -> Path:
    """A checkpoint dir as given (verified), or a run dir's newest good checkpoint."""
    if (path / AGENT_META).is_file():
        verify_checkpoint(path)
        return path
    skipped: list[str] = []
    latest = latest_checkpoint(path, skipped)
    if latest is None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run dir or checkpoint")
        reasons = "; ".join(skipped)
        detail = f" ({len(skipped)} damaged: {reasons})" if skipped else ""
        raise FileNotFoundError(f"{path}: no usable checkpoint found in {RunDir(path).checkpoints}{detail}")
    return latest


def read_newest(path: Path, read: Callable[[Path], T], attempts: int = 5) -> T:
    """``read(checkpoint dir)`` for ``path``: a checkpoint dir as given, or a run dir's
    newest good checkpoint. A run being trained meanwhile prunes old checkpoints, so the
    one chosen may vanish while it is read; the next newest is then read instead."""
    for attempt in range(attempts):
        directory = find_agent_dir(path)
        try:
            return read(directory)
        except (FileNotFoundError, CheckpointError):
            if directory.exists() or attempt == attempts - 1:
                raise  # damaged, or no longer a race: say so
    raise AssertionError("unreachable")


def load_loop_state(ckpt: Path, rank: int = 0) -> dict[str, Any]:
    """The training loop's counters saved beside the agent (those of ``rank``)."""
    return json.loads((ckpt / rank_loop_state(rank)).read_text())  # type: ignore[no-any-return]


def load_loop_tensors(ckpt: Path, rank: int = 0) -> dict[str, Any]:
    """Tensors the loop saved beside the agent (its policy state; for a rank above 0 also
    its agent's generators, as ``agent.*``), if any."""
    path = ckpt / rank_loop_tensors(rank)
    if not path.is_file():
        return {}
    from safetensors.torch import load_file

    return load_file(str(path))


def resume_point(run_dir: Path, out: TextIO) -> Path | None:
    """The newest checkpoint that verifies, saying which damaged ones were passed over."""
    skipped: list[str] = []
    ckpt = latest_checkpoint(run_dir, skipped)
    for reason in skipped:
        print(f"warning: skipping a damaged checkpoint: {reason}", file=out)
    if ckpt is None and skipped:
        raise RunError(
            f"{run_dir}: every checkpoint is damaged ({len(skipped)}); move the run dir away to start over"
        )
    if ckpt is not None and skipped:
        print(f"Falling back to {ckpt.name}, the newest checkpoint that verifies.", file=out)
    return ckpt
