"""A one-step pixel predictor: ``(o_t, a_t) -> o_{t+1}``, with no recurrent latent.

``agent.wm=pixel``: the lesson's first world model. Its state is the last
``agent.pixel.frames`` observations themselves (2 by default: a single frame shows
where things are but not how fast they move, two show both, and a second-order system
such as a cart-pole needs no more). An encoder reads the stacked frames into bottleneck
features ``z_t``, which the reward, continue, actor and critic heads read as they read a
latent model's features; a transition MLP maps ``(z_t, a_t)`` to a code from which the
decoder predicts the next observation. Imagining a step therefore decodes a whole frame,
pushes it onto the stack and encodes the stack again: interpretable (every imagined state
is a picture), and expensive, which is part of what the comparison of world models shows.

Trained on replayed sequences: the next-observation loss (per observation key, the
decoder's reconstruction loss, over the steps whose successor is in the same episode),
and the reward and continue losses at every step. The reward at a state is the one
received on arriving there, read off the features of its stack, as for the latent models.
The model predicts every key its encoder reads (``agent.enc.spaces``): imagination must
rebuild the whole stack.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.profiler import record_function

from dreamrl.config import AgentConfig, ComputeConfig, ConfigError, LossScales
from dreamrl.nets import distributions as D
from dreamrl.nets.codec import Decoder, Encoder, select_keys
from dreamrl.nets.heads import BinaryHead, TwoHotHead
from dreamrl.nets.layers import Linear, NormAct, RMSNorm, mlp, mlp_width
from dreamrl.spaces import Space, action_width
from dreamrl.world_models.base import Batch, Observation, Policy, WorldModel, WorldModelLoss
from dreamrl.world_models.rssm import continue_target, in_chunks

Frames = dict[str, torch.Tensor]  # the state: {key: [..., k, *shape]}, oldest frame first


def episode_starts(is_first: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` index of the first step of the episode each step is in (0 when the
    episode began before the window)."""
    T = is_first.shape[1]
    steps = torch.arange(T, device=is_first.device).expand_as(is_first)
    return torch.where(is_first.bool(), steps, torch.zeros_like(steps)).cummax(1).values


def frame_stacks(obs: Mapping[str, torch.Tensor], is_first: torch.Tensor, frames: int) -> Frames:
    """``{key: [B, T, ...]} -> {key: [B, T, frames, ...]}``: at each step the last
    ``frames`` observations of its episode, oldest first; before the episode's first
    step (or the window's) the earliest one is repeated."""
    B, T = is_first.shape
    start = episode_starts(is_first)
    steps = torch.arange(T, device=is_first.device)
    # [B, T, frames]: index of each stacked frame, clipped to the episode's start.
    index = torch.maximum(
        steps[None, :, None] - torch.arange(frames - 1, -1, -1, device=steps.device), start[..., None]
    )
    rows = torch.arange(B, device=steps.device)[:, None, None]
    return {k: v[rows, index] for k, v in obs.items()}


def push_frame(stack: Frames, frame: Mapping[str, torch.Tensor]) -> Frames:
    """The stack ``{key: [N, k, ...]}`` with its oldest frame dropped and ``frame
    {key: [N, ...]}`` appended."""
    return {k: torch.cat([v[:, 1:], frame[k][:, None].to(v.dtype)], 1) for k, v in stack.items()}


class PixelWorldModel(WorldModel):
    """Frame stack -> bottleneck features -> next frame, reward and continue."""

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
        pcfg = cfg.pixel
        self.frames = pcfg.frames
        fused = compute.compile
        self.spaces = select_keys(obs_space, cfg.enc.spaces, "agent.enc.spaces")
        self.image_keys = sorted(k for k, s in self.spaces.items() if s.is_image)
        self.encoder = Encoder(self.stacked_spaces(), cfg.enc.simple, fused=fused)
        self.bottleneck = nn.Sequential(
            Linear(self.encoder.out_dim, pcfg.units), RMSNorm(pcfg.units), nn.SiLU()
        )
        self.feat_dim = pcfg.units
        width = pcfg.units + action_width(act_space)
        self.transition = nn.Sequential(
            mlp(width, pcfg.layers, pcfg.units),
            NormAct(mlp_width(width, pcfg.layers, pcfg.units), 2 * pcfg.units),
        )
        if self.image_keys and pcfg.units % cfg.dec.simple.bspace:
            raise ConfigError(
                f"agent.pixel.units: {pcfg.units} must be a multiple of agent.dec.simple.bspace "
                f"({cfg.dec.simple.bspace})"
            )
        # The transition's output, split in two, stands where a latent model's (deter, stoch) would.
        self.decoder = Decoder(self.spaces, cfg.dec.simple, pcfg.units, pcfg.units, fused=fused)
        self.decoded_spaces = dict(self.spaces)
        self.reward = TwoHotHead(self.feat_dim, cfg.rewhead)
        self.cont = BinaryHead(self.feat_dim, cfg.conhead)
        self.codec_chunk = compute.codec_chunk

    def stacked_spaces(self) -> dict[str, Space]:
        """The encoder's input: images with ``frames`` times the channels, vectors with
        ``frames`` times the width."""
        out = {}
        for k, s in self.spaces.items():
            if s.is_image:
                out[k] = Space(s.dtype, (*s.shape[:-1], s.shape[-1] * self.frames))
            else:
                out[k] = Space(s.dtype, (s.size * self.frames,))
        return out

    # ------------------------------------------------------------------ pieces

    def _encoder_input(self, stack: Frames) -> dict[str, torch.Tensor]:
        """``{key: [N, k, ...]}`` -> the encoder's ``{key: [N, ...]}`` (frames side by side
        in the channels, or concatenated vectors)."""
        out = {}
        for k, v in stack.items():
            if k in self.image_keys:  # [N, k, H, W, C] -> [N, H, W, k*C]
                out[k] = v.permute(0, 2, 3, 1, 4).flatten(-2)
            else:
                out[k] = v.flatten(1)
        return out

    def _features(self, stack: Frames) -> torch.Tensor:
        """Bottleneck features ``[N, F]`` of stacks ``{key: [N, k, ...]}``."""
        return self.bottleneck(self.encoder(self._encoder_input(stack)))

    def _predict(self, feat: torch.Tensor, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decoder's raw output for the next observation from ``feat [N, F]`` and
        ``action [N, A]``: images in [0, 1], vectors in symlog space."""
        code = self.transition(torch.cat([feat, action.to(feat.dtype)], -1))
        units = self.cfg.pixel.units
        return self.decoder(code[:, :units], code[:, units:])

    def _as_frame(self, predicted: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decoder output as observations in the env's units (images 0..255, float)."""
        return {k: v * 255.0 if k in self.image_keys else D.symexp(v) for k, v in predicted.items()}

    # ------------------------------------------------------------------ the interface

    def initial(self, batch: int, device: torch.device | str) -> Frames:
        return {k: torch.zeros(batch, self.frames, *s.shape, device=device) for k, s in self.spaces.items()}

    def features(self, state: Frames) -> torch.Tensor:
        key, first = next(iter(state.items()))
        lead = first.shape[: first.dim() - 1 - len(self.spaces[key].shape)]  # before [k, *shape]
        flat = {k: v.reshape(-1, *v.shape[len(lead) :]) for k, v in state.items()}
        return self._features(flat).reshape(*lead, self.feat_dim)

    def observe_step(
        self,
        state: Frames,
        prev_action: torch.Tensor,
        obs: Mapping[str, torch.Tensor],
        is_first: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> Frames:
        frame = {k: obs[k].float() for k in self.spaces}
        pushed = push_frame(state, frame)
        first = is_first.bool()
        out = {}
        for k, v in pushed.items():
            fresh = frame[k][:, None].expand_as(v)  # a new episode: its first frame k times
            out[k] = torch.where(first.view(-1, *([1] * (v.dim() - 1))), fresh, v)
        return out

    def observe(self, batch: Batch, generator: torch.Generator | None = None) -> Observation:
        obs = {k: batch.obs[k].float() for k in self.spaces}
        return Observation(frame_stacks(obs, batch.is_first, self.frames), None)

    def _rollout(
        self, start: Frames, policy: Policy, horizon: int, dtype: torch.dtype | None
    ) -> tuple[torch.Tensor, torch.Tensor, list[Frames]]:
        stack = {k: v.float() for k, v in start.items()}
        feat = self._features(stack)
        feats, actions, stacks = [feat], [], []
        for t in range(horizon):
            action = policy(feat) if callable(policy) else policy[:, t]
            frame = self._as_frame(self._predict(feat, action))
            stack = push_frame(stack, frame)
            feat = self._features(stack)
            feats.append(feat)
            actions.append(action)
            stacks.append(stack)
        out = torch.stack(feats, 1)
        return out.to(dtype) if dtype is not None else out, torch.stack(actions, 1), stacks

    def imagine(
        self,
        start: Frames,
        policy: Policy,
        horizon: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feat, actions, _ = self._rollout(start, policy, horizon, dtype)
        return feat, actions

    def imagine_states(
        self, start: Frames, policy: Policy, horizon: int, generator: torch.Generator | None = None
    ) -> Observation:
        _, _, stacks = self._rollout(start, policy, horizon, None)
        return Observation({k: torch.stack([s[k] for s in stacks], 1) for k in start}, None)

    def decode(self, states: Frames) -> dict[str, torch.Tensor]:
        """The newest frame of each stack ``[B, T, k, ...]``: for real steps the observation
        itself, for imagined ones the prediction (images in [0, 1])."""
        return {k: v[:, :, -1] / 255.0 if k in self.image_keys else v[:, :, -1] for k, v in states.items()}

    # ------------------------------------------------------------------ training

    def loss_scales(self, scales: LossScales) -> dict[str, float]:
        return {**{k: scales.rec for k in self.spaces}, "rew": scales.rew, "con": scales.con}

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> WorldModelLoss:
        """Next-observation losses per key (scalars: means over the steps whose successor
        is in the same episode), ``rew`` and ``con`` ``[B, T]``."""
        B, T = batch.is_first.shape
        with record_function("wm/encode"):
            stacks = frame_stacks({k: batch.obs[k] for k in self.spaces}, batch.is_first, self.frames)
            flat = {k: v.flatten(0, 1) for k, v in stacks.items()}
            feat = in_chunks(lambda s: self._features(s), self.codec_chunk, flat).unflatten(0, (B, T))
        losses: dict[str, torch.Tensor] = {}
        with record_function("wm/decode"):
            # Step t predicts step t+1 from the action taken at t, within an episode.
            pred = self._predict(feat[:, :-1].flatten(0, 1), batch.action[:, :-1].flatten(0, 1))
            target = {k: batch.obs[k][:, 1:].flatten(0, 1) for k in self.spaces}
            same_episode = (~batch.is_first[:, 1:]).float().flatten()  # [B*(T-1)]
            count = same_episode.sum().clamp_min(1.0)
            for k, err in self.decoder.loss(pred, target).items():
                losses[k] = (err * same_episode).sum() / count
        with record_function("wm/heads"):
            reward_feat = feat if self.cfg.reward_grad else feat.detach()
            losses["rew"] = self.reward.loss(self.reward(reward_feat), batch.reward)
            cont = continue_target(batch.is_terminal, self.cfg.horizon, self.cfg.contdisc)
            losses["con"] = -D.bernoulli_logp(self.cont(feat), cont)
        metrics = {"wm/next_frames": count.detach()}
        return WorldModelLoss(losses, stacks, metrics)
