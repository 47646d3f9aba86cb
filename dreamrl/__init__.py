"""dreamrl: DreamerV3 and latent world models in PyTorch.

``from dreamrl import Agent`` gives the agent; :mod:`dreamrl.config` the configuration.
Heavy modules (torch) load on first use, so ``import dreamrl`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Agent", "Config", "__version__", "build_config"]


def __getattr__(name: str) -> Any:
    if name == "Agent":
        from dreamrl.agent import Agent

        return Agent
    if name in ("Config", "build_config"):
        from dreamrl import config

        return getattr(config, name)
    raise AttributeError(f"module 'dreamrl' has no attribute {name!r}")
