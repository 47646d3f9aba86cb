"""The C allocator choice: when the command restarts with jemalloc, and with what."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dreamrl.run.allocator import (
    JEMALLOC_CONF,
    MALLOC_ENV,
    RESTARTED_ENV,
    find_jemalloc,
    jemalloc_environ,
    malloc_in_use,
)

LIB = "libjemalloc.so.2"


def test_restart_environment_preloads_jemalloc_with_purging_off():
    env = jemalloc_environ({MALLOC_ENV: "jemalloc", "PATH": "/bin"}, LIB)
    assert env is not None
    assert env["LD_PRELOAD"] == LIB
    assert env["MALLOC_CONF"] == JEMALLOC_CONF
    assert env[RESTARTED_ENV] == "1"
    assert env["PATH"] == "/bin"


def test_jemalloc_is_the_default_where_installed():
    env = jemalloc_environ({"PATH": "/bin"}, LIB)
    assert env is not None and env["LD_PRELOAD"] == LIB


def test_restart_environment_keeps_the_users_preloads_and_settings():
    env = jemalloc_environ(
        {MALLOC_ENV: "jemalloc", "LD_PRELOAD": "libfoo.so", "MALLOC_CONF": "narenas:1"}, LIB
    )
    assert env is not None
    assert env["LD_PRELOAD"] == f"{LIB} libfoo.so"
    assert env["MALLOC_CONF"] == "narenas:1"


@pytest.mark.parametrize(
    "environ, library",
    [
        ({MALLOC_ENV: "glibc"}, LIB),  # asked for glibc
        ({}, None),  # jemalloc is the default, but not installed
        ({MALLOC_ENV: "jemalloc"}, None),  # jemalloc not installed
        ({MALLOC_ENV: "jemalloc", RESTARTED_ENV: "1"}, LIB),  # restarted once: a failed preload must not loop
    ],
)
def test_no_restart(environ, library):
    assert jemalloc_environ(environ, library) is None


def test_unknown_choice_is_an_error_naming_the_variable():
    with pytest.raises(ValueError, match=MALLOC_ENV):
        jemalloc_environ({MALLOC_ENV: "tcmalloc"}, LIB)


def test_the_command_reports_an_unknown_choice():
    proc = subprocess.run(
        [sys.executable, "-m", "dreamrl", "config"],
        capture_output=True,
        text=True,
        env={MALLOC_ENV: "nope", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode != 0 and MALLOC_ENV in proc.stderr


# An unknown DREAMRL_MALLOC makes a restart impossible to miss: the restart refuses it.
@pytest.mark.parametrize(
    "code, restarts",
    [
        ("from dreamrl.cli import main; raise SystemExit(main(['config', '--preset', 'debug']))", False),
        ("import sys; sys.argv = ['dreamrl', 'config']; from dreamrl.cli import main; main()", False),
        ("import sys; sys.argv = ['dreamrl', 'config']; from dreamrl.cli import console; console()", True),
    ],
)
def test_only_the_console_entry_point_restarts(code, restarts):
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={MALLOC_ENV: "nope", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert (MALLOC_ENV in proc.stderr) is restarts, proc.stderr
    assert (proc.returncode != 0) is restarts, proc.stderr


def test_malloc_in_use_reads_the_process_mappings(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert malloc_in_use(maps) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert malloc_in_use(maps) == "glibc"
    assert malloc_in_use(tmp_path / "missing") == "unknown"


# Run in a fresh interpreter: the allocator's settings are the whole process's. It fills
# the heap with 1 MB buffers (under the mmap threshold, so they stay in the heap), frees
# all but the newest, and prints resident MB when full, after freeing and after releasing.
RELEASE_PROBE = """
from dreamrl.run.allocator import exec_with_jemalloc, malloc_in_use, release_free_memory, tune_allocator
exec_with_jemalloc()
tune_allocator()
import numpy as np
from dreamrl.run.train import resident_mb
buffers = [np.ones(2**20, np.uint8) for _ in range(300)]
full = resident_mb()[0]
del buffers[:-1]
freed = resident_mb()[0]
released = release_free_memory()
print(malloc_in_use(), released, round(full), round(freed), round(resident_mb()[0]))
"""


@pytest.mark.parametrize("malloc", ["glibc", "jemalloc"])
def test_release_hands_freed_buffers_back_to_the_os(malloc):
    if malloc == "jemalloc" and find_jemalloc() is None:
        pytest.skip("libjemalloc2 is not installed (make installs it)")
    env = {"PATH": "/usr/bin:/bin", MALLOC_ENV: malloc}
    proc = subprocess.run(
        [sys.executable, "-c", RELEASE_PROBE], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    name, released, full, freed, after = proc.stdout.split()
    assert (name, released) == (malloc, "True")
    # Freed but kept: the allocator holds on to the 300 MB until asked to let go.
    assert int(freed) > int(full) - 50, proc.stdout
    assert int(after) < int(freed) - 250, proc.stdout
