"""Which machine each training session of a run ran on (``DIR/machines.jsonl``).

Wall times are a fact about a machine as much as about an agent: the same update took
three times as long on one 2-core CPU as on another (docs/performance.md), and a run that
resumed elsewhere has a clock made of two machines. Every session of every training loop (online, offline, the
baselines') appends one line when it starts, so that ``dreamrl compare`` can say whether
the wall times it puts side by side came from one kind of machine.

A line: ``{"time": ISO-8601 UTC, "env_steps": where the session began, "machine": {...}}``
with the CPU's model, its logical cores, the vector instruction sets torch's kernels
choose between, the GPU's name when the run trains on one, the 1-minute load average when
the session began (above the cores: other work shared the machine), and the torch and
Python versions.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dreamrl.rundir import RunDir

# The instruction sets that decide how fast a CPU's matrix products are (x86: AVX2, then
# AVX-512 and its bfloat16 and AMX extensions; ARM: NEON/ASIMD and SVE), as /proc/cpuinfo
# names them.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "asimd", "sve")
# What makes two machines the same for wall times (the versions and the load are noted,
# not compared: a session's load is the weather, not the machine).
KIND_KEYS = ("cpu", "cores", "isa", "gpu")


def cpu_info(text: str) -> tuple[str, list[str]]:
    """The CPU model and the :data:`ISA_FLAGS` it has, from ``/proc/cpuinfo``'s text
    ("unknown" and none where it says nothing)."""
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model == "unknown" and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, [f for f in ISA_FLAGS if f in flags]


def describe_machine(device: str = "cpu") -> dict[str, Any]:
    """This machine as a session of a run records it (see the module docstring);
    ``device`` is the torch device the run trains on (``compute.device``: "auto" too)."""
    import torch

    from dreamrl.devices import resolve_device

    device = str(resolve_device(device))

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model, isa = cpu_info(text)
    if model == "unknown":
        model = platform.processor() or platform.machine() or "unknown"
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device))
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "isa": isa,
        "gpu": gpu,
        "load_at_start": load,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def record_session(run_dir: Path, env_steps: int, device: str = "cpu") -> dict[str, Any]:
    """Append this session's line to ``run_dir``'s ``machines.jsonl``; returns it."""
    line = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "env_steps": int(env_steps),
        "machine": describe_machine(device),
    }
    with open(RunDir(run_dir).machines, "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def read_sessions(run_dir: Path) -> list[dict[str, Any]]:
    """Every session's line of ``run_dir`` in order; none for a run from before this file
    (or without it). A line cut short by a crash is skipped."""
    path = RunDir(run_dir).machines
    if not path.is_file():
        return []
    sessions = []
    for text in path.read_text().splitlines():
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("machine"), dict):
            sessions.append(line)
    return sessions


def machine_label(machine: Mapping[str, Any]) -> str:
    """A machine kind in words: "AMD EPYC, 2 cores, avx2" (and ", GPU <name>")."""
    parts = [str(machine.get("cpu", "unknown")), f"{machine.get('cores', '?')} cores"]
    if machine.get("isa"):
        parts.append("/".join(machine["isa"]))
    if machine.get("gpu"):
        parts.append(f"GPU {machine['gpu']}")
    return ", ".join(parts)


def machine_labels(sessions: Sequence[Mapping[str, Any]]) -> list[str]:
    """The distinct machine kinds of ``sessions``, in the order they first ran."""
    labels: list[str] = []
    for session in sessions:
        kind = {k: session["machine"].get(k) for k in KIND_KEYS}
        label = machine_label(kind)
        if label not in labels:
            labels.append(label)
    return labels


def crowded_sessions(sessions: Sequence[Mapping[str, Any]]) -> int:
    """How many of ``sessions`` began with a 1-minute load above the machine's cores."""
    count = 0
    for session in sessions:
        m = session["machine"]
        load, cores = m.get("load_at_start"), m.get("cores")
        if isinstance(load, (int, float)) and isinstance(cores, int) and load > cores:
            count += 1
    return count
