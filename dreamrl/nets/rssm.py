"""The recurrent state-space model (RSSM) of DreamerV3.

State ``(h, z)``: ``h`` is the deterministic path, a block-diagonal GRU of ``deter``
units in ``blocks`` groups; ``z`` is ``stoch`` categorical variables of ``classes``
classes each, held as one-hot vectors with straight-through gradients and 1% of
uniform mixed into their distributions.

Layout: latents are stored classes-major, ``[..., C, S]``, and every categorical
operation runs along ``dim=-2`` (:data:`CLASS_DIM`). The paper's ``[S, C]`` is the same
set of numbers transposed; a softmax along a size-4 trailing axis (``size1m``) is about
20x slower on a CPU than along a leading one, and the RSSM does one every step.

- ``core``: ``h_t = f(h_{t-1}, z_{t-1}, a_{t-1})``
- prior (imagination): ``p(z_t | h_t)``
- posterior (observation): ``q(z_t | h_t, e_t)`` with ``e_t`` the observation embedding
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from dreamrl.config import RSSMConfig
from dreamrl.nets import distributions as D
from dreamrl.nets.compiled import Compiled
from dreamrl.nets.layers import BlockLinear, BlockRMSNorm, Linear, NormAct, RMSNorm, mlp
from dreamrl.precision import to_compute_dtype

CLASS_DIM = -2
StepOut = tuple[torch.Tensor, ...]


class Latent(NamedTuple):
    """Model state: ``deter [..., D]`` and one-hot ``stoch [..., C, S]``."""

    deter: torch.Tensor
    stoch: torch.Tensor

    def features(self) -> torch.Tensor:
        """``[..., D + C*S]``: what every head reads."""
        return torch.cat([self.deter, self.stoch.flatten(-2)], -1)

    def detach(self) -> Latent:
        return Latent(self.deter.detach(), self.stoch.detach())

    def flatten_batch(self) -> Latent:
        """``[B, T, ...] -> [B*T, ...]``."""
        return Latent(self.deter.flatten(0, 1), self.stoch.flatten(0, 1))


class Observed(NamedTuple):
    """What :meth:`RSSM.observe` returns for a ``[B, T]`` sequence."""

    posterior: Latent  # [B, T, ...]
    post_logits: torch.Tensor  # [B, T, C, S]
    prior_logits: torch.Tensor  # [B, T, C, S]
    last: Latent  # [B, ...]: state after the final step, to continue from


def kl_losses(
    post_logits: torch.Tensor, prior_logits: torch.Tensor, free_nats: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two KL terms of the paper (eq. 5), each clipped below at ``free_nats``.

    ``dyn = max(free, KL(sg(post) || prior))`` trains the prior only;
    ``rep = max(free, KL(post || sg(prior)))`` trains the posterior only.
    Inputs ``[..., C, S]`` (log-probs), outputs ``[...]`` summed over the S latents.
    """
    dyn = D.categorical_kl(post_logits.detach(), prior_logits, CLASS_DIM)
    rep = D.categorical_kl(post_logits, prior_logits.detach(), CLASS_DIM)
    if free_nats:
        dyn = dyn.clamp_min(free_nats)
        rep = rep.clamp_min(free_nats)
    return dyn, rep


def normalise_action(action: torch.Tensor) -> torch.Tensor:
    """Divide each entry by ``max(1, |a|)``: keeps unclipped samples inside [-1, 1]."""
    return action / action.detach().abs().clamp_min(1.0)


class GRUInput(nn.Module):
    """First block layer of the GRU cell: block ``g`` sees its slice of deter and the
    shared input vector. The official code tiles the inputs into every block and
    applies one block-linear map; here the same weights are split into a block part
    (deter) and one dense matrix (inputs), which skips building the tiled tensor.
    Output is block-major ``[G, N, units/G]``.
    """

    def __init__(self, deter: int, inputs: int, units: int, blocks: int):
        super().__init__()
        fan_in = deter + inputs * blocks  # the official block layer's fan-in
        self.blocks = blocks
        self.deter_part = BlockLinear(deter, units, blocks, bias=False, fan_in=fan_in)
        self.input_part = Linear(inputs, units, fan_in=fan_in)

    def forward(self, deter_blocks: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``deter_blocks [G, N, D/G]``, ``inputs [N, I]`` -> ``[G, N, units/G]``."""
        n = inputs.shape[0]
        shared = self.input_part(inputs).view(n, self.blocks, -1).transpose(0, 1)
        return self.deter_part.blocks_forward(deter_blocks) + shared


class RSSM(nn.Module):
    """Block-GRU RSSM over ``embed`` observation embeddings and ``action_dim`` actions."""

    def __init__(self, cfg: RSSMConfig, embed: int, action_dim: int, fused: bool = False):
        super().__init__()
        if cfg.obslayers < 1:
            raise ValueError("agent.dyn.rssm.obslayers must be at least 1")
        self.cfg = cfg
        d, h, g = cfg.deter, cfg.hidden, cfg.blocks
        self.stoch_flat = cfg.stoch * cfg.classes
        # GRU inputs: deter, stoch and action each through their own NormAct unit.
        self.in_deter = NormAct(d, h)
        self.in_stoch = NormAct(self.stoch_flat, h)
        self.in_action = NormAct(action_dim, h)
        # Block layers: dynlayers hidden ones (D units, RMSNorm + SiLU after each),
        # then the gates (3D units: reset, candidate, update per block).
        widths = [d] * cfg.dynlayers + [3 * d]
        self.gru_in = GRUInput(d, 3 * h, widths[0], g)
        self.gru_norms = nn.ModuleList(BlockRMSNorm(d, g) for _ in range(cfg.dynlayers))
        self.gru_layers = nn.ModuleList(BlockLinear(d, w, g) for w in widths[1:])
        # Prior p(z | h).
        self.prior_mlp = mlp(d, cfg.imglayers, h)
        self.prior_out = Linear(h if cfg.imglayers else d, self.stoch_flat, cfg.outscale)
        # Posterior q(z | h, e): the first layer's weight splits into an h part and an
        # e part so the e part can run on the whole sequence at once, outside the scan.
        self.post_in = Linear(d + embed, h)
        self.post_norm = RMSNorm(h)
        self.post_mlp = mlp(h, cfg.obslayers - 1, h)
        self.post_out = Linear(h, self.stoch_flat, cfg.outscale)
        # compute.compile: observe and imagine run their steps torch.compile'd (step_runner).
        self.fused = fused

    # ------------------------------------------------------------------ pieces

    def initial(self, batch: int, device: torch.device | str) -> Latent:
        """All-zero state ``[batch, ...]``."""
        c = self.cfg
        return Latent(
            torch.zeros(batch, c.deter, device=device),
            torch.zeros(batch, c.classes, c.stoch, device=device),
        )

    def embed_action(self, action: torch.Tensor) -> torch.Tensor:
        """``action [..., A] -> [..., hidden]``, the GRU's action input."""
        return self.in_action(normalise_action(action))

    def core(self, deter: torch.Tensor, stoch: torch.Tensor, action_in: torch.Tensor) -> torch.Tensor:
        """One GRU step: ``deter [N, D]``, ``stoch [N, C, S]``, embedded action
        ``[N, hidden]`` -> next ``deter [N, D]``. Runs block-major inside."""
        g = self.cfg.blocks
        n, d = deter.shape
        inputs = torch.cat([self.in_deter(deter), self.in_stoch(stoch.flatten(-2)), action_in], -1)
        deter_blocks = deter.view(n, g, d // g).transpose(0, 1)  # [G, N, D/G], a view
        x = self.gru_in(deter_blocks, inputs)
        layer: BlockLinear
        for norm, layer in zip(self.gru_norms, self.gru_layers):  # type: ignore[assignment]
            x = layer.blocks_forward(F.silu(norm(x)))
        reset, cand, update = x.float().chunk(3, -1)  # each [G, N, D/G]; gates in float32
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1.0)
        new = torch.lerp(deter_blocks, cand, update)  # update * cand + (1 - update) * deter
        return new.transpose(0, 1).reshape(n, d)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Flat logit-layer output ``[..., C*S]`` -> unimixed log-probs ``[..., C, S]``."""
        x = x.float().unflatten(-1, (self.cfg.classes, self.cfg.stoch))
        return D.unimix_logits(x, self.cfg.unimix, CLASS_DIM)

    def prior_logits(self, deter: torch.Tensor) -> torch.Tensor:
        """``deter [..., D] -> log-probs [..., C, S]`` of the prior (unimix applied)."""
        return self._logits(self.prior_out(self.prior_mlp(deter)))

    def project_embed(self, embed: torch.Tensor) -> torch.Tensor:
        """The embedding's share of the posterior's first layer, ``[..., hidden]``."""
        weight = self.post_in.weight[:, self.cfg.deter :]
        return F.linear(embed, weight, self.post_in.bias)

    def posterior_deter_weight(self) -> torch.Tensor:
        """The deter share of the posterior's first layer, ``[hidden, D]``, in the compute
        dtype: a scan casts it once rather than once per step."""
        return to_compute_dtype(self.post_in.weight[:, : self.cfg.deter])

    def posterior_logits(
        self, deter: torch.Tensor, embed_proj: torch.Tensor, deter_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``deter [N, D]`` and projected embedding ``[N, hidden]`` -> log-probs ``[N, C, S]``;
        ``deter_weight`` is :meth:`posterior_deter_weight`, made here when not given."""
        weight = self.posterior_deter_weight() if deter_weight is None else deter_weight
        x = F.linear(deter, weight) + embed_proj
        return self._logits(self.post_out(self.post_mlp(F.silu(self.post_norm(x)))))

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-hot sample ``[..., C, S]`` with straight-through gradients."""
        return D.sample_onehot(logits, generator, CLASS_DIM)

    def uniform(self, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """``[n, C, S]`` uniform draws: what :meth:`sample` of ``n`` states draws."""
        return torch.rand((n, self.cfg.classes, self.cfg.stoch), device=device, generator=generator)

    def filter_step(
        self,
        deter: torch.Tensor,
        stoch: torch.Tensor,
        keep: torch.Tensor,
        action_in: torch.Tensor,
        embed_proj: torch.Tensor,
        deter_weight: torch.Tensor,
        uniform: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of :meth:`observe`: ``deter [N, D]``, ``stoch [N, C, S]``, ``keep [N, 1]``
        (0 where an episode starts), embedded action and projected embedding ``[N, hidden]``,
        :meth:`posterior_deter_weight`, and the sample's draws ``uniform [N, C, S]`` ->
        next ``deter``, ``stoch`` and the posterior's log-probs ``[N, C, S]``.

        Pure (the random draw is an input), so that ``compute.compile`` can compile it whole:
        its forward and backward each become a few fused kernels instead of some hundred
        small ones, which is what a small model's step is made of on a CPU.
        """
        deter = self.core(deter * keep, stoch * keep[..., None], action_in)
        logit = self.posterior_logits(deter, embed_proj, deter_weight)
        return deter, D.gumbel_onehot(logit, uniform, CLASS_DIM), logit

    def prior_step(
        self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor, uniform: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One imagined step (:meth:`imagine`): ``deter [N, D]``, ``stoch [N, C, S]``, ``action
        [N, A]`` and the sample's draws ``uniform [N, C, S]`` -> next ``deter``, ``stoch``.
        Pure, like :meth:`filter_step`."""
        deter = self.core(deter, stoch, self.embed_action(action))
        return deter, D.gumbel_onehot(self.prior_logits(deter), uniform, CLASS_DIM)

    def step_runner(self, method: Literal["filter_step", "prior_step"]) -> Callable[..., StepOut]:
        """``self.filter_step`` or ``self.prior_step`` (``method``) as a rollout runs it:
        the bound method, or with ``compute.compile`` (``fused``) the compiled step.

        The compiled step gets the model's matrix weights already cast to the compute
        dtype, once per rollout here. Left to autocast inside the compiled graph, every
        call would cast them anew and keep its copies for the backward pass: 64 sets per
        train step, 500 MB more resident at ``size12m`` in bfloat16 (eager autocast
        caches the cast of a leaf weight instead).
        """
        if not self.fused:
            return getattr(self, method)  # type: ignore[no-any-return]
        call = _StepCall(self, method)
        weights = {f"rssm.{k}": to_compute_dtype(p) for k, p in self.named_parameters() if p.ndim >= 2}
        compiled = _compiled_filter_step if method == "filter_step" else _compiled_prior_step
        return functools.partial(compiled, call, weights)

    # ------------------------------------------------------------------ rollouts

    def observe(
        self,
        start: Latent,
        embed: torch.Tensor,
        prev_action: torch.Tensor,
        is_first: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> Observed:
        """Filter a sequence: ``embed [B, T, E]``, ``prev_action [B, T, A]`` (the action
        taken before each step), ``is_first [B, T]`` (resets state and action to zero).
        """
        T = is_first.shape[1]
        keep = (~is_first.bool()).float()
        prev_action = prev_action * keep[..., None]
        action_in = self.embed_action(prev_action)  # [B, T, hidden], whole sequence at once
        embed_proj = self.project_embed(embed)  # [B, T, hidden]
        deter_weight = self.posterior_deter_weight()
        filter_step = self.step_runner("filter_step")
        deter, stoch = start
        deters, stochs, logits = [], [], []
        for t in range(T):
            uniform = self.uniform(deter.shape[0], deter.device, generator)
            deter, stoch, logit = filter_step(
                deter, stoch, keep[:, t, None], action_in[:, t], embed_proj[:, t], deter_weight, uniform
            )
            deters.append(deter)
            stochs.append(stoch)
            logits.append(logit)
        deter_seq = torch.stack(deters, 1)
        posterior = Latent(deter_seq, torch.stack(stochs, 1))
        return Observed(
            posterior=posterior,
            post_logits=torch.stack(logits, 1),
            prior_logits=self.prior_logits(deter_seq),
            last=Latent(deter, stoch),
        )

    def obs_step(
        self,
        state: Latent,
        prev_action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> Latent:
        """One filtering step for acting: all inputs ``[N, ...]``, returns ``[N, ...]``."""
        keep = (~is_first.bool()).float()[:, None]
        deter = self.core(
            state.deter * keep, state.stoch * keep[..., None], self.embed_action(prev_action * keep)
        )
        logit = self.posterior_logits(deter, self.project_embed(embed))
        stoch = self.sample(logit, generator) if sample else D.mode_onehot(logit, CLASS_DIM)
        return Latent(deter, stoch)

    def imagine(
        self,
        start: Latent,
        policy: Callable[[Latent], torch.Tensor] | torch.Tensor,
        horizon: int,
        generator: torch.Generator | None = None,
    ) -> tuple[Latent, torch.Tensor]:
        """Roll the prior forward ``horizon`` steps from ``start [N, ...]``.

        ``policy`` is a function of the state giving an action ``[N, A]``, or a tensor
        ``[N, horizon, A]`` of given actions. Returns states ``[N, horizon+1, ...]``
        (the start first) and the actions ``[N, horizon, A]`` taken between them.
        """
        feat, actions = self.imagine_features(start, policy, horizon, generator)
        deter = feat[..., : self.cfg.deter]
        return Latent(deter, feat[..., self.cfg.deter :].unflatten(-1, start.stoch.shape[-2:])), actions

    def imagine_features(
        self,
        start: Latent,
        policy: Callable[[Latent], torch.Tensor] | torch.Tensor,
        horizon: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`imagine`, returning the states as features ``[N, horizon+1, D + C*S]``
        (``dtype``, by default the start's) and the actions ``[N, horizon, A]``.

        Each step is written into one preallocated tensor: stacking per-step states and
        then concatenating them into features held three copies of the trajectory at
        once (168 MB each at ``size12m`` from 1,024 starts), and the actor-critic needs
        only the features, in its compute dtype.
        """
        n, d = start.deter.shape[0], self.cfg.deter
        feat = start.deter.new_empty(n, horizon + 1, d + self.stoch_flat, dtype=dtype)
        feat[:, 0] = start.features()
        state = start
        actions = []
        prior_step = self.step_runner("prior_step")
        for t in range(horizon):
            action = policy(state) if callable(policy) else policy[:, t]
            uniform = self.uniform(n, action.device, generator)
            state = Latent(*prior_step(*_dense(state.deter, state.stoch, action), uniform))
            feat[:, t + 1, :d] = state.deter
            feat[:, t + 1, d:] = state.stoch.flatten(-2)
            actions.append(action)
        return feat, torch.stack(actions, 1)


def _dense(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors laid out contiguously (copied only where they are not). A compiled step
    is specialised on its inputs' layout: the states and given actions of a diagnostic
    rollout, slices of larger tensors, each cost a compile of their own without this."""
    return tuple(t.contiguous() for t in tensors)


class _StepCall(nn.Module):
    """Runs one step method of ``rssm`` as its forward, so that torch.func.functional_call
    can run the step on weights given in place of the model's own."""

    def __init__(self, rssm: RSSM, method: str):
        super().__init__()
        self.rssm = rssm
        self.method = method

    def forward(self, *args: torch.Tensor) -> StepOut:
        return getattr(self.rssm, self.method)(*args)  # type: ignore[no-any-return]


# Two functions, not one: torch.compile keeps its graphs (at most 8) per function, and each
# step needs a few (gradient on or off, a first step whose state needs no gradient).
def _filter_step_with(call: _StepCall, weights: dict[str, torch.Tensor], *args: torch.Tensor) -> StepOut:
    return torch.func.functional_call(call, weights, args)  # type: ignore[no-any-return]


def _prior_step_with(call: _StepCall, weights: dict[str, torch.Tensor], *args: torch.Tensor) -> StepOut:
    return torch.func.functional_call(call, weights, args)  # type: ignore[no-any-return]


# Shared by every RSSM: a compiled graph takes the model's parameters as inputs.
_compiled_filter_step = Compiled(_filter_step_with, "the RSSM's steps")
_compiled_prior_step = Compiled(_prior_step_with, "the RSSM's steps")
