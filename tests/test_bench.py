"""`dreamrl bench --profile`: the phases of a train step and its costliest operators."""

from __future__ import annotations

import torch

from dreamrl.config import build_config
from dreamrl.run.bench import PHASES, bench


def test_profile_attributes_the_step_to_its_phases():
    torch.set_num_threads(1)
    config = build_config(["debug"], {"task": "CartPole-v1", "run.threads": 1})
    result = bench(config, train_steps=1, warmup=1, env_steps=10, profile=4)
    profile = result["profile"]
    assert set(profile["phases"]) == set(PHASES)
    for name, seconds in profile["phases"].items():
        assert seconds > 0, name  # every phase ran inside the profiled step
    # The phases do not overlap, so together they fit inside the step they were measured in.
    assert sum(profile["phases"].values()) <= profile["step_s"]
    ops = profile["top_ops"]
    assert len(ops) == 4
    assert [op["self_s"] for op in ops] == sorted((op["self_s"] for op in ops), reverse=True)
    assert all(0 < op["share"] <= 1 and op["calls"] >= 1 for op in ops)
    assert not any(op["name"] in PHASES for op in ops)
