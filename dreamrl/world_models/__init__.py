"""World models: what is learned from real experience, behind one interface
(:class:`~dreamrl.world_models.base.WorldModel`).

- :mod:`.rssm`: DreamerV3's latent RSSM, its representation learned by reconstruction;
- :mod:`.decoderfree`: the same RSSM with no decoder, its representation learned by
  redundancy reduction between latents and embeddings (R2-Dreamer);
- :mod:`.pixel`: a one-step predictor of the next observation from a short stack of
  the last ones, with no recurrent latent.

:func:`make_world_model` builds the one ``agent.wm`` names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dreamrl.config import AgentConfig, ComputeConfig
    from dreamrl.spaces import Space
    from dreamrl.world_models.base import WorldModel


# agent.wm -> "module:Class". A fourth world model is a class and a line here.
WORLD_MODELS: dict[str, str] = {
    "rssm": "dreamrl.world_models.rssm:RSSMWorldModel",
    "decoderfree": "dreamrl.world_models.decoderfree:DecoderFreeWorldModel",
    "pixel": "dreamrl.world_models.pixel:PixelWorldModel",
}


def make_world_model(
    obs_space: Mapping[str, Space], act_space: Space, cfg: AgentConfig, compute: ComputeConfig | None = None
) -> WorldModel:
    """The world model ``cfg.wm`` names, for these spaces."""
    import importlib

    from dreamrl.config import ConfigError

    if cfg.wm not in WORLD_MODELS:
        raise ConfigError(f"agent.wm: {cfg.wm!r} is not a world model; known: {', '.join(WORLD_MODELS)}")
    module, name = WORLD_MODELS[cfg.wm].split(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(obs_space, act_space, cfg, compute)  # type: ignore[no-any-return]
