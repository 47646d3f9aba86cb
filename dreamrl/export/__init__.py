"""Policies that run without dreamrl: the deterministic policy step as an ONNX or
TorchScript file, with its recurrent state explicit, and a JSON spec beside it.

- :mod:`.graph`: :class:`PolicyStep`, the step ``(obs..., is_first, state...) ->
  (action, env_action, next state...)`` as one module, and its named tensors;
- :mod:`.formats`: writing the step as ``onnx`` or ``torchscript``, and running the file;
- :mod:`.spec`: the JSON of names, shapes, dtypes and the preprocessing the step expects;
- :mod:`.check`: the library's actions against the file's on recorded observations;
- :mod:`.exporter`: :func:`export_policy`, all of it in order.

From Python::

    from dreamrl.agent import Agent
    from dreamrl.export import export_policy

    exported = export_policy(Agent.load("runs/cartpole"), "onnx", "policy.onnx")
    print(exported.check.line())

This module itself imports nothing heavy (the command line reads its constants without
loading torch); the functions above are imported from their modules when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dreamrl.export.exporter import Exported, export_policy, exportable, spec_path_for
    from dreamrl.export.graph import PolicyStep

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # of the policy file; its spec adds .json
CHECK_SOURCES = ("env", "replay")  # what the check's observations come from
CHECK_STEPS = 300  # steps the check compares actions on, by default

_LAZY = {
    "Exported": "dreamrl.export.exporter",
    "export_policy": "dreamrl.export.exporter",
    "exportable": "dreamrl.export.exporter",
    "spec_path_for": "dreamrl.export.exporter",
    "PolicyStep": "dreamrl.export.graph",
}

__all__ = [
    "CHECK_SOURCES",
    "CHECK_STEPS",
    "FORMATS",
    "SUFFIXES",
    "Exported",
    "PolicyStep",
    "export_policy",
    "exportable",
    "spec_path_for",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
