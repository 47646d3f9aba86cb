"""DreamerV3's RSSM learned without a decoder: R2-Dreamer's redundancy reduction.

``agent.wm=decoderfree``. The encoder, RSSM, reward and continue heads and the KL terms
are DreamerV3's (:class:`~dreamrl.world_models.rssm.RSSMWorldModel`); only the
representation objective changes. Instead of reconstructing every observation, the
posterior features of each replayed step are mapped by a linear projector to the
embedding's width and a Barlow Twins loss pulls their cross-correlation with the (stopped)
embedding toward the identity (:mod:`.redundancy`): the latents must carry what the
embedding carries, each dimension something different, and no pixel is ever predicted.

A probe decoder (``agent.decoderfree.probe``) reconstructs observations from the
*stopped* latents: it never shapes the model, but :meth:`DecoderFreeWorldModel.decode`
lets the diagnostics and the report show what the latents hold (labelled a probe).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from dreamrl.config import LossScales
from dreamrl.nets.codec import Decoder, select_keys
from dreamrl.nets.rssm import Latent
from dreamrl.spaces import Space
from dreamrl.world_models.redundancy import Projector, r2dreamer_loss
from dreamrl.world_models.rssm import RSSMWorldModel, in_chunks

PROBE_PREFIX = "probe_"  # loss names of the probe decoder: probe_<key>


class DecoderFreeWorldModel(RSSMWorldModel):
    """The RSSM world model with redundancy reduction in place of reconstruction."""

    decode_is_probe = True

    def build_representation(self, obs_space: Mapping[str, Space]) -> None:
        dcfg = self.cfg.decoderfree
        self.projector = Projector(self.feat_dim, self.encoder.out_dim)
        self.probe: Decoder | None = None
        self.decoded_spaces = {}
        if dcfg.probe:
            dec_space = select_keys(obs_space, self.cfg.dec.spaces, "agent.dec.spaces")
            rssm_cfg = self.cfg.dyn.rssm
            self.probe = Decoder(
                dec_space, self.cfg.dec.simple, rssm_cfg.deter, self.rssm.stoch_flat, fused=self.fused
            )
            self.decoded_spaces = dict(self.probe.spaces)

    def _probe_losses(
        self, deter: torch.Tensor, stoch: torch.Tensor, obs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        assert self.probe is not None
        return self.probe.loss(self.probe(deter, stoch), obs)

    def representation_losses(
        self, posterior: Latent, embed: torch.Tensor, obs: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``barlow`` (a scalar for the batch) and, with the probe, ``probe_<key> [n, T]``
        from the stopped latents of the first ``n = agent.decoderfree.probe_sequences``
        sequences."""
        B, T = embed.shape[:2]
        losses = {
            "barlow": r2dreamer_loss(
                posterior.features(), embed, self.projector, self.cfg.decoderfree.offdiag
            )
        }
        if self.probe is not None:
            # The probe learns from the first few sequences only: it shapes nothing, and
            # decoding every step would cost what the decoder it replaces cost.
            n = min(self.cfg.decoderfree.probe_sequences or B, B)
            deter = posterior.deter[:n].detach().flatten(0, 1)
            stoch = posterior.stoch[:n].detach().flatten(0, 1).flatten(-2)
            rows = {k: v[: n * T] for k, v in obs.items()}  # obs are [B*T, ...], batch-major
            probe = in_chunks(self._probe_losses, self.codec_chunk, deter, stoch, rows)
            losses.update({PROBE_PREFIX + k: v.view(n, T) for k, v in probe.items()})
        return losses, {}

    def loss_scales(self, scales: LossScales) -> dict[str, float]:
        probe = {PROBE_PREFIX + k: scales.rec for k in self.decoded_spaces}
        return {
            "barlow": self.cfg.decoderfree.scale,
            **probe,
            "rew": scales.rew,
            "con": scales.con,
            "dyn": scales.dyn,
            "rep": scales.rep,
        }

    def decode(self, states: Latent) -> dict[str, torch.Tensor]:
        """The probe's reconstructions (none without the probe)."""
        if self.probe is None:
            return {}
        return self._decode_with(self.probe, states)
