"""Checkpoints in a run dir: ``checkpoints/ckpt-<step>/`` written whole or not at all.

A checkpoint directory is assembled under a temporary name and renamed into place once
every file in it is written and synced, so a directory named ``ckpt-*`` is always
complete. Older checkpoints are pruned only after the new one exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

CKPT_DIR = "checkpoints"
CKPT_NAME = re.compile(r"^ckpt-(\d+)$")
LOOP_FILE = "loop.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``[(step, path)]``, oldest first."""
    root = run_dir / CKPT_DIR
    if not root.is_dir():
        return []
    out = []
    for path in root.iterdir():
        m = CKPT_NAME.match(path.name)
        if m and path.is_dir():
            out.append((int(m[1]), path))
    return sorted(out)


def save_checkpoint(run_dir: Path, step: int, agent: Any, loop: dict[str, Any], keep: int) -> Path:
    """Write agent and loop state as ``checkpoints/ckpt-<step>`` and prune old ones."""
    root = run_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:012d}"
    tmp = root / f".tmp-ckpt-{step:012d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        agent.save(tmp)
        (tmp / LOOP_FILE).write_text(json.dumps(loop))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run dir, if any."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


def find_agent_dir(path: Path) -> Path:
    """A checkpoint dir as given, or a run dir's newest checkpoint."""
    if (path / "agent.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run dir or checkpoint")
        raise FileNotFoundError(f"{path}: no checkpoint found (looked in {path / CKPT_DIR})")
    return latest


def load_loop_state(ckpt: Path) -> dict[str, Any]:
    """The training loop's counters saved beside the agent."""
    return json.loads((ckpt / LOOP_FILE).read_text())
