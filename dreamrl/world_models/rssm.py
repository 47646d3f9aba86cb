"""DreamerV3's world model: encoder, RSSM, decoder, reward and continue heads, and their losses.

:class:`RSSMWorldModel` is ``agent.wm=rssm``; its representation is learned by
reconstructing the observations. Subclasses change only that objective
(:meth:`RSSMWorldModel.representation_losses`): see :mod:`.decoderfree`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch.profiler import record_function
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from dreamrl.config import AgentConfig, ComputeConfig, LossScales
from dreamrl.nets import distributions as D
from dreamrl.nets.codec import Decoder, Encoder, select_keys
from dreamrl.nets.heads import BinaryHead, TwoHotHead
from dreamrl.nets.rssm import CLASS_DIM, RSSM, Latent, kl_losses
from dreamrl.spaces import Space, action_width
from dreamrl.world_models.base import Batch, Observation, Policy, WorldModel, WorldModelLoss


def previous_actions(action: torch.Tensor) -> torch.Tensor:
    """``[B, T, A]`` actions taken *before* each step: shifted right, zeros first."""
    return torch.cat([torch.zeros_like(action[:, :1]), action[:, :-1]], 1)


def continue_target(is_terminal: torch.Tensor, horizon: int, contdisc: bool) -> torch.Tensor:
    """``1 - terminal``, times the discount ``1 - 1/horizon`` when it is folded in."""
    target = 1.0 - is_terminal.float()
    return target * (1 - 1 / horizon) if contdisc else target


Out = TypeVar("Out", torch.Tensor, dict[str, torch.Tensor])


def in_chunks(fn: Callable[..., Out], chunk: int, *args: torch.Tensor | dict[str, torch.Tensor]) -> Out:
    """``fn`` over the leading dimension ``N`` of every argument, ``chunk`` rows at a time,
    keeping none of its activations: each chunk's are recomputed in the backward pass
    (activation checkpointing), so at most one chunk's exist at once. The results,
    tensors ``[N, ...]`` or dicts of them, are those of ``fn`` on the whole, up to the
    float rounding of kernels that pick their method by batch size.
    ``chunk=0``, or no gradient being recorded, runs ``fn`` once on everything."""

    def rows(
        arg: torch.Tensor | dict[str, torch.Tensor], start: int
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        if isinstance(arg, dict):
            return {k: v[start : start + chunk] for k, v in arg.items()}
        return arg[start : start + chunk]

    if chunk <= 0 or not torch.is_grad_enabled():
        return fn(*args)
    first = args[0]
    n = len(next(iter(first.values()))) if isinstance(first, dict) else len(first)
    # Early stop would end a recomputation by raising inside it, through compiled code
    # (compute.compile) that must not take it for a failure; each chunk is recomputed whole.
    with set_checkpoint_early_stop(False):
        parts = [
            checkpoint(fn, *(rows(a, start) for a in args), use_reentrant=False)
            for start in range(0, n, chunk)
        ]
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}  # type: ignore[return-value]
    return torch.cat(parts)  # type: ignore[arg-type,return-value]


class RSSMWorldModel(WorldModel):
    """Everything learned from real experience: encoder, RSSM, decoder and heads."""

    def __init__(
        self,
        obs_space: Mapping[str, Space],
        act_space: Space,
        cfg: AgentConfig,
        compute: ComputeConfig | None = None,
    ):
        super().__init__()
        compute = compute or ComputeConfig(compile=False)
        self.cfg = cfg
        self.obs_space = dict(obs_space)
        rssm_cfg = cfg.dyn.rssm
        self.fused = compute.compile
        enc_space = select_keys(obs_space, cfg.enc.spaces, "agent.enc.spaces")
        self.encoder = Encoder(enc_space, cfg.enc.simple, fused=self.fused)
        self.rssm = RSSM(rssm_cfg, self.encoder.out_dim, action_width(act_space), fused=self.fused)
        feat = rssm_cfg.deter + rssm_cfg.stoch * rssm_cfg.classes
        self.feat_dim = feat
        self.build_representation(obs_space)
        self.reward = TwoHotHead(feat, cfg.rewhead)
        self.cont = BinaryHead(feat, cfg.conhead)
        # Frames per encoder/decoder chunk in :meth:`loss` (``compute.codec_chunk``); 0: all.
        self.codec_chunk = compute.codec_chunk

    # ------------------------------------------------------------------ representation

    def build_representation(self, obs_space: Mapping[str, Space]) -> None:
        """The modules of the representation objective: here the decoder."""
        dec_space = select_keys(obs_space, self.cfg.dec.spaces, "agent.dec.spaces")
        rssm_cfg = self.cfg.dyn.rssm
        self.decoder = Decoder(
            dec_space, self.cfg.dec.simple, rssm_cfg.deter, self.rssm.stoch_flat, fused=self.fused
        )
        self.decoded_spaces = dict(self.decoder.spaces)

    def _reconstruction_losses(
        self, deter: torch.Tensor, stoch: torch.Tensor, obs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Decoder losses ``{key: [N]}`` from ``deter [N, D]``, flat ``stoch [N, C*S]`` and
        observations ``[N, ...]``."""
        return self.decoder.loss(self.decoder(deter, stoch), obs)

    def representation_losses(
        self, posterior: Latent, embed: torch.Tensor, obs: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Loss terms ``{name: [B, T]}`` that shape the representation, and metrics, from
        the posterior ``[B, T, ...]``, the embedding ``[B, T, E]`` and the flattened
        observations ``{key: [B*T, ...]}``: one reconstruction loss per decoded key."""
        B, T = embed.shape[:2]
        deter, stoch = posterior.deter.flatten(0, 1), posterior.stoch.flatten(0, 1).flatten(-2)
        losses = in_chunks(self._reconstruction_losses, self.codec_chunk, deter, stoch, obs)
        return {k: v.view(B, T) for k, v in losses.items()}, {}

    def loss_scales(self, scales: LossScales) -> dict[str, float]:
        return {
            **{k: scales.rec for k in self.decoder.spaces},  # one reconstruction loss per decoded key
            "rew": scales.rew,
            "con": scales.con,
            "dyn": scales.dyn,
            "rep": scales.rep,
        }

    def agc_groups(self) -> list[list[torch.Tensor]]:
        gru_in = self.rssm.gru_in  # one tensor in the official code: one AGC norm
        return [[gru_in.deter_part.weight, gru_in.input_part.weight]]

    # ------------------------------------------------------------------ the interface

    def initial(self, batch: int, device: torch.device | str) -> Latent:
        return self.rssm.initial(batch, device)

    def features(self, state: Latent) -> torch.Tensor:
        return state.features()

    def codes(self, state: Latent) -> torch.Tensor:
        return state.stoch

    def observe_step(
        self,
        state: Latent,
        prev_action: torch.Tensor,
        obs: Mapping[str, torch.Tensor],
        is_first: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> Latent:
        embed = self.encoder(obs)
        return self.rssm.obs_step(state, prev_action, embed, is_first, sample=sample, generator=generator)

    def observe(self, batch: Batch, generator: torch.Generator | None = None) -> Observation:
        B = batch.is_first.shape[0]
        embed = self.encoder(batch.obs)
        start = self.rssm.initial(B, batch.reward.device)
        observed = self.rssm.observe(start, embed, previous_actions(batch.action), batch.is_first, generator)
        return Observation(observed.posterior, observed.post_logits)

    def imagine(
        self,
        start: Latent,
        policy: Policy,
        horizon: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rssm.imagine_features(start, _on_latents(policy), horizon, generator, dtype)

    def imagine_states(
        self, start: Latent, policy: Policy, horizon: int, generator: torch.Generator | None = None
    ) -> Observation:
        traj, _ = self.rssm.imagine(start, _on_latents(policy), horizon, generator)
        states = Latent(traj.deter[:, 1:], traj.stoch[:, 1:])
        return Observation(states, self.rssm.prior_logits(states.deter))

    def decode(self, states: Latent) -> dict[str, torch.Tensor]:
        return self._decode_with(self.decoder, states)

    def _decode_with(self, decoder: Decoder, states: Latent) -> dict[str, torch.Tensor]:
        B, T = states.deter.shape[:2]
        out = decoder(states.deter.flatten(0, 1), states.stoch.flatten(0, 1).flatten(-2))
        decoded = {}
        for key, value in out.items():
            value = value.reshape(B, T, *value.shape[1:])
            decoded[key] = value if key in decoder.image_keys else D.symexp(value)
        return decoded

    # ------------------------------------------------------------------ training

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> WorldModelLoss:
        """World-model losses ``{name: [B, T]}`` (unscaled), the filtered states, and
        metrics. Loss names: the representation's (:meth:`representation_losses`),
        ``rew``, ``con``, ``dyn``, ``rep``."""
        B, T = batch.is_first.shape
        start = self.rssm.initial(B, batch.reward.device)
        # Named phases show up in `dreamrl bench --profile` (and cost nothing otherwise).
        chunk = self.codec_chunk
        with record_function("wm/encode"):
            flat_obs = {k: v.flatten(0, 1) for k, v in batch.obs.items()}
            embed = in_chunks(self.encoder, chunk, flat_obs).unflatten(0, (B, T))
        with record_function("wm/observe"):
            actions = previous_actions(batch.action)
            observed = self.rssm.observe(start, embed, actions, batch.is_first, generator)
        post = observed.posterior
        feat = post.features()  # [B, T, F]
        losses: dict[str, torch.Tensor] = {}
        dyn, rep = kl_losses(observed.post_logits, observed.prior_logits, self.cfg.dyn.rssm.free_nats)
        losses["dyn"], losses["rep"] = dyn, rep
        with record_function("wm/decode"):
            rep_losses, rep_metrics = self.representation_losses(post, embed, flat_obs)
            losses.update(rep_losses)
        with record_function("wm/heads"):
            reward_feat = feat if self.cfg.reward_grad else feat.detach()
            losses["rew"] = self.reward.loss(self.reward(reward_feat), batch.reward)
            target = continue_target(batch.is_terminal, self.cfg.horizon, self.cfg.contdisc)
            losses["con"] = -D.bernoulli_logp(self.cont(feat), target)
        with torch.no_grad():
            metrics = {
                "wm/prior_ent": D.categorical_entropy(observed.prior_logits, CLASS_DIM).sum(-1).mean(),
                "wm/post_ent": D.categorical_entropy(observed.post_logits, CLASS_DIM).sum(-1).mean(),
                "wm/kl": D.categorical_kl(observed.post_logits, observed.prior_logits, CLASS_DIM).mean(),
            }
        metrics.update(rep_metrics)
        return WorldModelLoss(losses, post, metrics)


def _on_latents(policy: Policy) -> Callable[[Latent], torch.Tensor] | torch.Tensor:
    """A policy of features as the RSSM's rollouts call it: a function of the latent."""
    if isinstance(policy, torch.Tensor):
        return policy
    return lambda latent: policy(latent.features())
