"""The JSON written beside an exported policy: everything a user needs to drive it.

Its inputs and outputs (name, dtype, shape with ``"N"`` the batch, role), which state
output feeds which state input at the next step, how to turn the env's raw observation
into the inputs (per observation key: where it comes from and what is done to it), and
what the action outputs mean. docs/export.md describes every field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dreamrl import __version__
from dreamrl.export.graph import IS_FIRST, OBS, STATE, PolicyStep, Tensor, next_name

if TYPE_CHECKING:
    from dreamrl.agents.dreamer import DreamerAgent
    from dreamrl.envs.convert import ObsConverter

SPEC_FORMAT = 1

# What becomes of an env's raw observation part before it is the input of that key, by
# ObsConverter entry kind (dreamrl/envs/convert.py).
PREPROCESS = {
    "vector": "the value as float32, flattened to the input's shape",
    "onehot": "one-hot float32 of (value - offset) over `classes` values",
    "multionehot": "each part's (value - start) one-hot over its classes, concatenated, float32",
    "image": (
        "uint8 frame [H, W, C] (a 2-D frame gets a channel axis), resized to `size` "
        "with antialiased bilinear interpolation (Pillow's Image.resize BILINEAR) unless it is "
        "that size already; values 0..255, not scaled"
    ),
    "render": (
        "the env's rgb_array render, env.render(), uint8 [H, W, 3], resized to `size` "
        "with antialiased bilinear interpolation (Pillow's Image.resize BILINEAR) unless it is "
        "that size already; values 0..255, not scaled"
    ),
}


def _tensor(t: Tensor) -> dict[str, Any]:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "role": t.role}


def build_spec(
    agent: DreamerAgent, step: PolicyStep, fmt: str, file: str, origin: dict[str, Any]
) -> dict[str, Any]:
    """The spec of ``step`` (exported from ``agent`` as ``fmt`` into ``file``, a name
    beside the spec); ``origin`` says where it came from (checkpoint, env steps)."""
    inputs = []
    for t in step.inputs:
        entry = _tensor(t)
        if t.role == STATE:
            entry["initial"] = 0.0
            entry["next"] = next_name(t.name)
        elif t.role == IS_FIRST:
            entry["meaning"] = "true on the first step of an episode: the state is reset"
        inputs.append(entry)
    return {
        "spec_format": SPEC_FORMAT,
        "format": fmt,
        "file": file,
        "dreamrl": __version__,
        "torch": torch.__version__,
        **origin,
        "task": agent.config.task,
        "world_model": agent.config.agent.wm,
        "deterministic": True,
        "batch": "dimension 0 (N) of every input and output: envs stepped together; any N",
        "inputs": inputs,
        "outputs": [_tensor(t) for t in step.outputs],
        "observation": observation_spec(agent, step),
        "action": action_spec(agent),
    }


def observation_spec(agent: DreamerAgent, step: PolicyStep) -> dict[str, Any]:
    """How the env's raw observation becomes the observation inputs."""
    conv = agent.obs_converter
    keys = [t.name for t in step.inputs if t.role == OBS]
    if conv is None:
        return {"keys": keys, "from_env": None}
    return {
        "keys": keys,
        "pixels": any(e.kind == "render" for e in conv.entries),
        "size": list(conv.size),
        "from_env": [_entry(conv, key) for key in keys],
    }


def _entry(conv: ObsConverter, key: str) -> dict[str, Any]:
    entry = next(e for e in conv.entries if e.key == key)
    out: dict[str, Any] = {
        "input": key,
        "kind": entry.kind,
        "path": list(entry.path),
        "shape": list(entry.shape),
        "preprocess": PREPROCESS[entry.kind],
    }
    if entry.kind == "onehot":
        out["classes"], out["offset"] = entry.classes, entry.offset
    if entry.kind == "multionehot":
        out["parts"], out["starts"] = list(entry.parts), list(entry.starts)
    return out


def action_spec(agent: DreamerAgent) -> dict[str, Any]:
    """What the ``action`` and ``env_action`` outputs are."""
    space, conv = agent.act_space, agent.act_converter
    if space.discrete:
        offset = int(conv.low[0]) if conv is not None and conv.low is not None else 0
        return {
            "kind": "discrete",
            "classes": space.classes,
            "action": "int32 index in 0..classes-1 (the mode of the actor)",
            "env_action": f"action + {offset}: the env's Discrete value",
            "offset": offset,
        }
    out: dict[str, Any] = {
        "kind": "continuous",
        "width": space.size,
        "action": "float32 vector in [-1, 1] (the actor's mean, clipped)",
    }
    if conv is not None:
        assert conv.low is not None and conv.high is not None
        out.update(
            env_action="low + (action + 1) / 2 * (high - low), shaped as the env's Box",
            low=conv.low.tolist(),
            high=conv.high.tolist(),
            shape=list(conv.shape),
        )
    return out
