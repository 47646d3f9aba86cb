"""Observation encoder and decoder for dict observations mixing images and vectors.

Images are ``uint8 [..., H, W, C]`` (channels last, as envs give them); vectors are
``float32 [..., D]``. Each reads or rebuilds the keys of the spaces it is built with:
:func:`select_keys` picks them by the ``agent.enc.spaces`` / ``agent.dec.spaces`` regex.
The encoder's CNN convolves unstrided and max-pools by 2 each stage and the decoder
upsamples (nearest) then convolves, as the official code does.

Feature maps are kept in PyTorch's channels-last memory format (``[N, C, H, W]``
shapes with NHWC strides): oneDNN's convolutions run about twice as fast on it on a
CPU for these small channel counts, and the images arrive in that layout anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from dreamrl.config import ConfigError, DecoderConfig, EncoderConfig
from dreamrl.nets.distributions import symlog
from dreamrl.nets.layers import BlockLinear, ChannelNormSiLU, Conv2d, Linear, RMSNorm, mlp
from dreamrl.spaces import Space

CHANNELS_LAST = torch.channels_last


def select_keys(spaces: Mapping[str, Space], pattern: str, setting: str) -> dict[str, Space]:
    """The observation keys ``pattern`` (a regex, fully matched) selects, for the encoder
    or decoder that ``setting`` (``agent.enc.spaces`` / ``agent.dec.spaces``) configures.

    Raises :class:`ConfigError` naming the setting when the regex does not compile or
    selects no key: the encoder must read something, and a world model with nothing to
    reconstruct is not DreamerV3's (its representation is learned through the decoder)."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{setting}: {pattern!r} is not a regular expression ({e})") from None
    chosen = {k: s for k, s in spaces.items() if regex.fullmatch(k)}
    if not chosen:
        raise ConfigError(
            f"{setting}: {pattern!r} matches none of the observation keys ({', '.join(spaces)}); "
            "it must match at least one, in full"
        )
    return chosen


def split_keys(spaces: Mapping[str, Space]) -> tuple[list[str], list[str]]:
    """``(image_keys, vector_keys)``, each sorted, of an observation space."""
    images = sorted(k for k, s in spaces.items() if s.is_image)
    vectors = sorted(k for k, s in spaces.items() if not s.is_image)
    return images, vectors


class Encoder(nn.Module):
    """``obs dict [B, T, ...] -> embedding [B, T, E]``."""

    def __init__(self, spaces: Mapping[str, Space], cfg: EncoderConfig, fused: bool = False):
        super().__init__()
        self.spaces = dict(spaces)  # the keys it reads; others in the observation are ignored
        self.image_keys, self.vector_keys = split_keys(spaces)
        self.symlog = cfg.symlog
        width = 0
        if self.vector_keys:
            vec_in = sum(spaces[k].size for k in self.vector_keys)
            self.mlp = mlp(vec_in, cfg.layers, cfg.units)
            width += cfg.units if cfg.layers else vec_in
        if self.image_keys:
            first = spaces[self.image_keys[0]]
            height, wide = first.shape[0], first.shape[1]
            channels = sum(spaces[k].shape[-1] for k in self.image_keys)
            depths = [cfg.depth * m for m in cfg.mults]
            self.convs = nn.ModuleList()
            self.norms = nn.ModuleList()
            for depth in depths:
                self.convs.append(Conv2d(channels, depth, cfg.kernel))
                self.norms.append(ChannelNormSiLU(depth, fused=fused))
                channels = depth
            factor = 2 ** len(depths)
            width += channels * (height // factor) * (wide // factor)
        self.out_dim = width

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        lead: Sequence[int] = ()
        if self.vector_keys:
            x = torch.cat([obs[k].float() for k in self.vector_keys], -1)
            lead = x.shape[:-1]
            x = symlog(x) if self.symlog else x
            parts.append(self.mlp(x))
        if self.image_keys:
            x = torch.cat([obs[k] for k in self.image_keys], -1)
            lead = x.shape[:-3]
            x = x.reshape(-1, *x.shape[-3:]).permute(0, 3, 1, 2)  # NHWC strides: channels-last
            x = x.float().contiguous(memory_format=CHANNELS_LAST) / 255.0 - 0.5
            for conv, norm in zip(self.convs, self.norms):
                x = F.max_pool2d(conv(x), 2)
                x = norm(x)
            parts.append(x.reshape(*lead, -1))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]


class Decoder(nn.Module):
    """``features (deter [N, D], stoch [N, S*C]) -> reconstructions`` per observation key.

    Returns images in [0, 1] ``[N, H, W, C]`` (sigmoid) and vectors in symlog space
    ``[N, D]``; :meth:`loss` turns them into per-step losses.
    """

    def __init__(
        self,
        spaces: Mapping[str, Space],
        cfg: DecoderConfig,
        deter: int,
        stoch_flat: int,
        fused: bool = False,
    ):
        super().__init__()
        self.spaces = dict(spaces)  # the keys it rebuilds, one reconstruction loss each
        self.image_keys, self.vector_keys = split_keys(spaces)
        if self.vector_keys:
            self.mlp = mlp(deter + stoch_flat, cfg.layers, cfg.units)
            width = cfg.units if cfg.layers else deter + stoch_flat
            self.vec_out = nn.ModuleDict(
                {k: Linear(width, spaces[k].size, outscale=cfg.outscale) for k in self.vector_keys}
            )
        if self.image_keys:
            first = spaces[self.image_keys[0]]
            depths = [cfg.depth * m for m in cfg.mults]
            factor = 2 ** len(depths)
            self.minres = (first.shape[0] // factor, first.shape[1] // factor)
            self.top = depths[-1]
            cells = self.minres[0] * self.minres[1] * self.top
            self.bspace = cfg.bspace
            if self.top % cfg.bspace:
                raise ValueError(
                    f"agent.dec.simple.bspace={cfg.bspace} must divide the top CNN depth {self.top}"
                )
            # Deter reaches the first feature map through a block-sparse map (each of
            # the bspace groups of deter fills its own slice of the channels), stoch
            # through a dense two-layer path; the two are summed, as in the paper's code.
            self.space_deter = BlockLinear(deter, cells, cfg.bspace)
            self.space_stoch = nn.Sequential(
                Linear(stoch_flat, 2 * cfg.units),
                RMSNorm(2 * cfg.units),
                nn.SiLU(),
                Linear(2 * cfg.units, cells),
            )
            self.space_norm = ChannelNormSiLU(self.top, fused=fused)
            self.convs = nn.ModuleList()
            self.norms = nn.ModuleList()
            channels = self.top
            for depth in reversed(depths[:-1]):
                self.convs.append(Conv2d(channels, depth, cfg.kernel))
                self.norms.append(ChannelNormSiLU(depth, fused=fused))
                channels = depth
            out_channels = sum(spaces[k].shape[-1] for k in self.image_keys)
            self.image_out = Conv2d(channels, out_channels, cfg.kernel, outscale=cfg.outscale)

    def forward(self, deter: torch.Tensor, stoch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reconstructions for ``deter [N, D]`` and flat ``stoch [N, S*C]``."""
        out: dict[str, torch.Tensor] = {}
        if self.vector_keys:
            x = self.mlp(torch.cat([deter, stoch], -1))
            for k in self.vector_keys:
                out[k] = self.vec_out[k](x).float()
        if self.image_keys:
            out.update(self._images(deter, stoch))
        return out

    def _images(self, deter: torch.Tensor, stoch: torch.Tensor) -> dict[str, torch.Tensor]:
        n = deter.shape[0]
        h, w = self.minres
        g = self.bspace
        # Block g of deter fills channel slice g of every cell: '(g h w c) -> (g c) h w'.
        x0 = self.space_deter(deter).reshape(n, g, h, w, self.top // g)
        x0 = x0.permute(0, 1, 4, 2, 3).reshape(n, self.top, h, w)
        x1 = self.space_stoch(stoch).reshape(n, h, w, self.top).permute(0, 3, 1, 2)
        x = self.space_norm(x0 + x1).contiguous(memory_format=CHANNELS_LAST)
        for conv, norm in zip(self.convs, self.norms):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = norm(conv(x))
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = torch.sigmoid(self.image_out(x).float()).permute(0, 2, 3, 1)  # [N, H, W, C]
        out = {}
        start = 0
        for k in self.image_keys:
            c = self.spaces[k].shape[-1]
            out[k] = x[..., start : start + c]
            start += c
        return out

    def loss(
        self, recon: Mapping[str, torch.Tensor], obs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-step losses ``{key: [N]}``: MSE summed over pixels for images (targets
        scaled to [0, 1]), MSE in symlog space summed over dims for vectors."""
        losses = {}
        for k in self.image_keys:
            target = obs[k].reshape(recon[k].shape).float() / 255.0
            losses[k] = (recon[k] - target).square().sum((-3, -2, -1))
        for k in self.vector_keys:
            target = symlog(obs[k].reshape(recon[k].shape).float())
            losses[k] = (recon[k] - target).square().sum(-1)
        return losses
