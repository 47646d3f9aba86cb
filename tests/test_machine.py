"""Which machine each training session ran on, and what compare makes of it."""

from __future__ import annotations

import json

from dreamrl.compare.summary import wall_time_warnings
from dreamrl.run.machine import (
    cpu_info,
    crowded_sessions,
    describe_machine,
    machine_label,
    machine_labels,
    read_sessions,
    record_session,
)
from dreamrl.rundir import RunDir

X86 = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16
"""
ARM = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
"""


def test_the_cpu_model_and_its_vector_extensions_are_read_from_cpuinfo():
    assert cpu_info(X86) == ("AMD EPYC 9B14", ["avx2", "avx512f", "avx512_bf16"])
    assert cpu_info(ARM) == ("unknown", ["asimd", "sve"])
    assert cpu_info("") == ("unknown", [])


def test_a_session_line_is_appended_and_read_back_and_a_torn_line_skipped(tmp_path):
    first = record_session(tmp_path, 0)
    record_session(tmp_path, 1200, "cpu")
    with open(RunDir(tmp_path).machines, "a") as f:
        f.write('{"time": "2026-')  # a crash mid-write
    sessions = read_sessions(tmp_path)
    assert [s["env_steps"] for s in sessions] == [0, 1200]
    machine = first["machine"]
    assert machine == describe_machine("cpu") | {"load_at_start": machine["load_at_start"]}
    assert machine["gpu"] is None and machine["cores"] >= 1
    assert read_sessions(tmp_path / "missing") == []


def session(cpu="AMD EPYC", cores=2, isa=("avx2",), load=0.5, gpu=None):
    return {"machine": {"cpu": cpu, "cores": cores, "isa": list(isa), "gpu": gpu, "load_at_start": load}}


def test_machines_are_told_apart_by_kind_not_by_their_load():
    a, b = session(load=0.1), session(load=1.9)
    other = session(isa=("avx2", "avx512f"))
    assert machine_labels([a, b]) == ["AMD EPYC, 2 cores, avx2"]
    assert machine_labels([a, other, b]) == ["AMD EPYC, 2 cores, avx2", "AMD EPYC, 2 cores, avx2/avx512f"]
    assert machine_label(session(gpu="NVIDIA H200")["machine"]).endswith(", GPU NVIDIA H200")
    assert crowded_sessions([a, session(load=2.5), session(load=11.6)]) == 2


def run(seed, machines, sessions=1, crowded=0):
    return {"seed": seed, "machines": machines, "sessions": sessions, "crowded_sessions": crowded}


def test_compare_warns_where_wall_times_come_from_different_or_busy_machines():
    slow, fast = "AMD EPYC, 2 cores, avx2", "Intel Xeon, 2 cores, avx2/avx512f"
    same = {"dreamer": {"runs": [run(0, [slow]), run(1, [slow])]}, "ppo": {"runs": [run(0, [slow])]}}
    assert wall_time_warnings(same) == []
    mixed = {
        "dreamer": {"runs": [run(0, [slow]), run(1, [fast, slow], sessions=2)]},
        "ppo": {"runs": [run(0, [fast], crowded=1), run(1, [], sessions=0)]},
    }
    warnings = wall_time_warnings(mixed)
    assert warnings[0] == f"wall times come from 2 kinds of machine: {slow}; {fast}"
    assert warnings[1] == "resumed on another kind of machine: dreamer seed 1"
    assert warnings[2].endswith(": ppo seed 0") and "busier than its cores" in warnings[2]
    assert warnings[3] == "recorded no machine (older runs): ppo seed 1"
    # Runs from before the file: nothing is known, so nothing is claimed.
    assert wall_time_warnings({"dreamer": {"runs": [run(0, [], sessions=0)]}}) == []
    json.dumps(warnings)
