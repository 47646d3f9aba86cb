"""Memory allocators: jemalloc where it is installed, glibc's malloc tuned otherwise.

PyTorch's CPU allocator hands every tensor buffer straight to ``malloc``, so the C
allocator decides both a train step's resident memory and part of its time.

glibc's malloc fragments under a train step's pattern (hundreds of buffers of a few
MB, freed and allocated again each step): a ``size12m`` bfloat16 step kept 2.2 GB
resident for a live-tensor peak of 0.85 GB. jemalloc with page purging off kept 1.8 GB
and ran as fast or faster, ``size1m`` 10-20% faster (``docs/performance.md``, "The C
allocator"). Decay purging is off because returning freed pages to the OS while a step
runs makes it fault them in again: with jemalloc's default decay the step took 9.7 s,
not 5.8 s. Instead the training loop purges between updates
(:func:`release_free_memory`, every ``run.release_every``): without that, a ``size12m``
training run's resident memory crept up about 6 MB per update; purging after every
update, it held 1,274 MB flat where glibc's (trimmed alike) rose to 1,560 MB.

jemalloc has to be loaded before the interpreter starts (``LD_PRELOAD``), so the
``dreamrl`` command and the benchmarks restart once, first thing, with Debian's
``libjemalloc2`` preloaded (:func:`exec_with_jemalloc`); ``DREAMRL_MALLOC=glibc`` keeps
glibc, as does a machine without the library. On glibc :func:`tune_allocator` raises
the mmap threshold and disables trimming, which keeps freed buffers for reuse: on a
2-core CPU that took a size1m block-GRU layer from 10 ms to 3 ms per call.

Nothing here runs at import. A program that imports dreamrl keeps the allocator its
interpreter started with: preload jemalloc yourself (``LD_PRELOAD=libjemalloc.so.2
MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 python ...``) or call :func:`tune_allocator`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit systems

MALLOC_ENV = "DREAMRL_MALLOC"  # 'jemalloc' (default, where installed) or 'glibc'
MALLOC_CHOICES = ("jemalloc", "glibc")
DEFAULT_MALLOC = "jemalloc"
# Set in the restarted process, so that a library that failed to preload cannot loop.
RESTARTED_ENV = "DREAMRL_MALLOC_RESTARTED"
# Never purge freed pages on a timer (see the module docstring): the training loop
# purges between updates, when nothing of a step is left to fault back in mid-step.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def find_jemalloc() -> str | None:
    """The jemalloc shared library's name as the dynamic loader finds it, or None."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library("jemalloc")


def malloc_in_use(maps: Path = Path("/proc/self/maps")) -> str:
    """Which C allocator this process runs on: 'jemalloc', 'tcmalloc', 'glibc', or
    'unknown' where the process's mappings cannot be read (off Linux)."""
    try:
        text = maps.read_text()
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc"):
        if f"lib{name}" in text:
            return name
    return "glibc"


def jemalloc_environ(environ: Mapping[str, str], library: str | None) -> dict[str, str] | None:
    """The environment to restart the process with so that jemalloc is preloaded, or
    None where it should not restart: ``DREAMRL_MALLOC`` is ``glibc``, no library was
    found, or this process is already the restarted one. A user's own ``MALLOC_CONF``
    wins over :data:`JEMALLOC_CONF`; raises ValueError on an unknown ``DREAMRL_MALLOC``."""
    choice = environ.get(MALLOC_ENV, DEFAULT_MALLOC)
    if choice not in MALLOC_CHOICES:
        raise ValueError(f"{MALLOC_ENV}={choice!r}: expected one of {', '.join(MALLOC_CHOICES)}")
    if choice == "glibc" or library is None or environ.get(RESTARTED_ENV):
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = " ".join(x for x in (library, environ.get("LD_PRELOAD", "")) if x)
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    env[RESTARTED_ENV] = "1"
    return env


def exec_with_jemalloc() -> None:
    """Restart this process with jemalloc preloaded unless ``DREAMRL_MALLOC=glibc`` or
    it cannot be (see the module docstring); otherwise return. Call before any work:
    the process is replaced."""
    if malloc_in_use() != "glibc":
        return
    try:
        env = jemalloc_environ(os.environ, find_jemalloc())
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv is the command line as the interpreter received it (`-m`, a script or
    # a console-script wrapper), so the restarted process runs the same thing.
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def tune_allocator() -> bool:
    """Apply glibc's settings; returns True when glibc accepted them (False off glibc,
    or where jemalloc or tcmalloc serves the process's allocations)."""
    if not sys.platform.startswith("linux") or malloc_in_use() != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    ok &= mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    return bool(ok)


# jemalloc's pseudo-index for "every arena" in ``arena.<i>.purge`` (MALLCTL_ARENAS_ALL).
JEMALLOC_ALL_ARENAS = 4096


def release_free_memory() -> bool:
    """Hand the pages of freed buffers back to the OS now; returns True where the
    allocator did (glibc's ``malloc_trim``, jemalloc's purge of every arena).

    Between train steps almost nothing a step allocated is still alive, yet both
    allocators above keep all of it resident, and around it their fragmentation grows
    step after step. Releasing it resets that; the next step faults the pages in again
    (cost and figures in ``docs/performance.md``, "Releasing memory between steps")."""
    if not sys.platform.startswith("linux"):
        return False
    malloc = malloc_in_use()
    try:
        if malloc == "glibc":
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.malloc_trim(0)  # its result says whether any memory was released, not failure
            return True
        if malloc == "jemalloc":
            mallctl = ctypes.CDLL(None).mallctl  # the preloaded library's symbol
            name = f"arena.{JEMALLOC_ALL_ARENAS}.purge".encode()
            return bool(mallctl(name, None, None, None, ctypes.c_size_t(0)) == 0)
    except (OSError, AttributeError):
        return False
    return False
