"""Writing a run's files when the disk may fill: whole files or none, and one message.

Another process can take the space after the up-front check (which refuses a replay that
cannot fit) has passed. Every writer of a run then meets a full disk the same way: files
are written under a temporary name and renamed into place, so a half-written one is
never taken for a good one, and the loop stops with :func:`disk_full_message`, which
names the disk and the newest checkpoint that is intact.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is a full disk or quota."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
        seen += 1
    return False


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` whole, or leave ``path`` as it was."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path`` (or its nearest existing parent)."""
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    stat = os.statvfs(mount_point(path))
    return stat.f_bavail * stat.f_frsize


def disk_full_message(run_dir: Path, error: BaseException, newest_checkpoint: Path | None) -> str:
    """One message for a run stopped by a full disk: which disk, what failed, what is kept."""
    mount = mount_point(run_dir)
    what = getattr(error, "filename", None) or str(error)
    kept = (
        f"The newest intact checkpoint is {newest_checkpoint}; free space and rerun the same command "
        "to resume from it."
        if newest_checkpoint is not None
        else "No checkpoint was written yet; free space and rerun the same command to start again."
    )
    return (
        f"the disk holding {run_dir} (mounted at {mount}, {free_bytes(run_dir) / 2**20:.1f} MB free) is "
        f"full: writing {what} failed. The run stopped. {kept}"
    )
