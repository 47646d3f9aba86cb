"""`dreamrl bench --profile`: the phases of a train step and its costliest operators."""

from __future__ import annotations

import pytest
import torch

from dreamrl.config import build_config
from dreamrl.run.bench import PHASES, bench


def test_profile_attributes_the_step_to_its_phases():
    torch.set_num_threads(1)
    config = build_config(["debug"], {"task": "CartPole-v1", "compute.threads": 1})
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


def test_recomputed_codec_flops_are_counted_apart():
    """With compute.codec_chunk the encoder and decoder run forward twice; the step's counted
    FLOPs stay the model's, the second forward is reported on its own."""
    torch.set_num_threads(1)
    results = {}
    for chunk in (0, 16):
        overrides = {
            "task": "fixtures.tiny_env:TinyLine-v0",
            "env.pixels": True,
            "compute.codec_chunk": chunk,
        }
        results[chunk] = bench(build_config(["debug"], overrides), train_steps=1, warmup=1, env_steps=5)
    assert results[0]["gflop_recomputed"] == 0
    recomputed = results[16]["gflop_recomputed"]
    assert recomputed > 0.1 * results[0]["gflop_per_step"]  # the CNNs are most of a pixel step
    assert results[16]["gflop_per_step"] == pytest.approx(results[0]["gflop_per_step"], rel=1e-9)
