"""The C allocator choice: when the command restarts with jemalloc, and with what."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dreamrl.run.allocator import (
    JEMALLOC_CONF,
    MALLOC_ENV,
    RESTARTED_ENV,
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
        ({}, LIB),  # glibc is the default
        ({MALLOC_ENV: "glibc"}, LIB),
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


def test_malloc_in_use_reads_the_process_mappings(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert malloc_in_use(maps) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert malloc_in_use(maps) == "glibc"
    assert malloc_in_use(tmp_path / "missing") == "unknown"
