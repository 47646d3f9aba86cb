"""Behaviour pinned before the loop was refactored into handed-in parts (issue 16).

A `debug` run on CartPole-v1 (CPU, one thread, seed 3) through the command line: the
losses of its first five updates and its first 20 collected actions, as recorded before
the refactor. A change that alters what a run computes fails here; one that only moves
code does not. Recorded values are exact to float32 rounding (rtol 1e-5).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreamrl.cli import main

LOSSES = [
    {
        "loss/dyn": 2.1868696212768555,
        "loss/rep": 2.1868696212768555,
        "loss/vector": 1.6700102090835571,
        "loss/rew": 5.541263580322266,
        "loss/con": 0.7556308507919312,
        "loss/policy": -1.1788525625888724e-05,
        "loss/value": 0.6282804608345032,
        "loss/repval": 10.620756149291992,
        "loss/total": 14.186957359313965,
    },
    {
        "loss/dyn": 2.073563575744629,
        "loss/rep": 2.073563575744629,
        "loss/vector": 1.8890326023101807,
        "loss/rew": 5.541263580322266,
        "loss/con": 0.731476902961731,
        "loss/policy": -1.1971157618972939e-05,
        "loss/value": 0.6380139589309692,
        "loss/repval": 10.528401374816895,
        "loss/total": 14.239214897155762,
    },
    {
        "loss/dyn": 2.0174896717071533,
        "loss/rep": 2.0174896717071533,
        "loss/vector": 1.8562313318252563,
        "loss/rew": 5.541263580322266,
        "loss/con": 0.7334373593330383,
        "loss/policy": -1.2180179510323796e-05,
        "loss/value": 0.6488394141197205,
        "loss/repval": 10.436046600341797,
        "loss/total": 14.129812240600586,
    },
    {
        "loss/dyn": 2.145306348800659,
        "loss/rep": 2.145306348800659,
        "loss/vector": 1.7320568561553955,
        "loss/rew": 5.541261672973633,
        "loss/con": 0.7243287563323975,
        "loss/policy": -1.2111134310544003e-05,
        "loss/value": 0.6445631384849548,
        "loss/repval": 10.436043739318848,
        "loss/total": 14.132848739624023,
    },
    {
        "loss/dyn": 1.9843899011611938,
        "loss/rep": 1.9843899011611938,
        "loss/vector": 1.8916124105453491,
        "loss/rew": 5.541259765625,
        "loss/con": 0.755303680896759,
        "loss/policy": -1.1998322406725492e-05,
        "loss/value": 0.637765109539032,
        "loss/repval": 10.436038970947266,
        "loss/total": 14.139569282531738,
    },
]

ACTIONS = [0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]


def _collected_actions(replay_dir, per_env: int) -> list[int]:
    """The first ``per_env`` actions of every env, interleaved step by step."""
    streams: dict[int, list[tuple[int, np.ndarray]]] = {}
    for chunk in sorted(replay_dir.glob("*.npz")):
        stream, start, length = map(int, chunk.stem.split("-"))
        with np.load(chunk) as data:
            streams.setdefault(stream, []).append((start, data["action"][:length]))
    per_stream = [np.concatenate([a for _, a in sorted(parts)]) for _, parts in sorted(streams.items())]
    return np.stack([a[:per_env] for a in per_stream], 1).reshape(-1).tolist()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_debug_run_computes_what_it_did_before_the_refactor(tmp_path, one_thread, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--env", "CartPole-v1", "--logdir", str(run_dir), "--preset", "debug"]
    argv += ["--no-progress", "--seed", "3", "run.steps=160", "run.log_every=0", "run.eval_eps=0"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [{k: v for k, v in r.items() if k.startswith("loss/")} for r in records if "loss/total" in r]
    assert len(losses) >= 5
    for i, (got, want) in enumerate(zip(losses[:5], LOSSES)):
        assert got.keys() == want.keys(), f"update {i}: loss terms differ"
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), f"update {i}: {key}"
    assert _collected_actions(run_dir / "replay", 10) == ACTIONS
