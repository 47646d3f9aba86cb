"""RSSM shape contracts, is_first resets, and GRUInput against the official tiled
block-linear formulation."""

from __future__ import annotations

import torch

from dreamrl.config import RSSMConfig
from dreamrl.nets.rssm import RSSM, GRUInput, Latent

CFG = RSSMConfig(deter=32, hidden=16, stoch=4, classes=3, blocks=4)
EMBED, ACT = 10, 2
B, T = 3, 6


def make_rssm(seed: int = 0) -> RSSM:
    torch.manual_seed(seed)
    return RSSM(CFG, EMBED, ACT)


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    embed = torch.randn(B, T, EMBED, generator=gen)
    action = torch.randn(B, T, ACT, generator=gen).clamp(-1, 1)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return embed, action, is_first


def assert_onehot_classes_major(stoch: torch.Tensor) -> None:
    """One-hot along the classes axis (dim -2), up to straight-through round-off."""
    torch.testing.assert_close(stoch.sum(-2), torch.ones(stoch.sum(-2).shape), rtol=0, atol=1e-5)
    torch.testing.assert_close(stoch, stoch.round(), rtol=0, atol=1e-5)


def test_observe_shapes():
    rssm = make_rssm()
    embed, action, is_first = inputs()
    out = rssm.observe(rssm.initial(B, "cpu"), embed, action, is_first, torch.Generator().manual_seed(0))
    C, S, Dd = CFG.classes, CFG.stoch, CFG.deter
    assert out.posterior.deter.shape == (B, T, Dd)
    assert out.posterior.stoch.shape == (B, T, C, S)
    assert out.post_logits.shape == (B, T, C, S)
    assert out.prior_logits.shape == (B, T, C, S)
    assert out.last.deter.shape == (B, Dd)
    assert out.last.stoch.shape == (B, C, S)
    # The last state is the final step of the sequence.
    assert torch.equal(out.last.deter, out.posterior.deter[:, -1])
    assert torch.equal(out.last.stoch, out.posterior.stoch[:, -1])
    assert_onehot_classes_major(out.posterior.stoch)
    # Logits are normalised log-probs over the classes axis.
    torch.testing.assert_close(out.post_logits.exp().sum(-2), torch.ones(B, T, S))
    torch.testing.assert_close(out.prior_logits.exp().sum(-2), torch.ones(B, T, S))
    feat = out.posterior.features()
    assert feat.shape == (B, T, Dd + C * S)


def test_imagine_with_policy_function():
    rssm = make_rssm()
    N, H = 5, 4
    gen = torch.Generator().manual_seed(3)
    start = Latent(torch.randn(N, CFG.deter, generator=gen), torch.zeros(N, CFG.classes, CFG.stoch))
    start.stoch[:, 0, :] = 1.0

    def policy(state: Latent) -> torch.Tensor:
        assert state.deter.shape == (N, CFG.deter)
        return torch.tanh(state.deter[:, :ACT])

    states, actions = rssm.imagine(start, policy, H, gen)
    assert states.deter.shape == (N, H + 1, CFG.deter)
    assert states.stoch.shape == (N, H + 1, CFG.classes, CFG.stoch)
    assert actions.shape == (N, H, ACT)
    assert torch.equal(states.deter[:, 0], start.deter)
    assert torch.equal(states.stoch[:, 0], start.stoch)
    # Each action is the policy's output at the state it was taken from.
    torch.testing.assert_close(actions, torch.tanh(states.deter[:, :-1, :ACT]))
    assert_onehot_classes_major(states.stoch)


def test_imagine_with_given_actions():
    rssm = make_rssm()
    N, H = 2, 3
    start = rssm.initial(N, "cpu")
    given = torch.randn(N, H, ACT, generator=torch.Generator().manual_seed(4))
    states, actions = rssm.imagine(start, given, H, torch.Generator().manual_seed(5))
    assert states.deter.shape == (N, H + 1, CFG.deter)
    assert states.stoch.shape == (N, H + 1, CFG.classes, CFG.stoch)
    assert torch.equal(actions, given)
    # Same actions and same generator draws: the same rollout.
    again, _ = rssm.imagine(start, given, H, torch.Generator().manual_seed(5))
    assert torch.equal(again.deter, states.deter)
    # A different action changes the next deter.
    other, _ = rssm.imagine(start, given.flip(0), H, torch.Generator().manual_seed(5))
    assert not torch.allclose(other.deter[:, 1], states.deter[:, 1])


def test_imagined_features_are_the_imagined_states_in_the_asked_dtype():
    rssm = make_rssm()
    N, H = 3, 4
    start = rssm.initial(N, "cpu")
    given = torch.randn(N, H, ACT, generator=torch.Generator().manual_seed(4))
    states, _ = rssm.imagine(start, given, H, torch.Generator().manual_seed(5))
    feat, actions = rssm.imagine_features(start, given, H, torch.Generator().manual_seed(5))
    assert feat.shape == (N, H + 1, CFG.deter + CFG.classes * CFG.stoch) and feat.is_contiguous()
    assert torch.equal(feat, states.features())
    assert torch.equal(actions, given)
    half, _ = rssm.imagine_features(start, given, H, torch.Generator().manual_seed(5), torch.bfloat16)
    assert half.dtype == torch.bfloat16
    # The rollout itself stays float32; only what is written out is rounded.
    assert torch.equal(half, feat.to(torch.bfloat16))


def test_is_first_resets_the_state():
    """With is_first at t, everything from t on is independent of the steps before t
    (same generator draws), and the deter at t equals a fresh start's first deter."""
    rssm = make_rssm()
    t = 3
    embed, action, is_first = inputs()
    is_first[:, t] = True
    other_embed, other_action = embed.clone(), action.clone()
    other_embed[:, :t] = torch.randn(B, t, EMBED) * 5
    other_action[:, :t] = -action[:, :t]
    start = Latent(torch.randn(B, CFG.deter), rssm.initial(B, "cpu").stoch)
    with torch.no_grad():
        a = rssm.observe(start, embed, action, is_first, torch.Generator().manual_seed(9))
        b = rssm.observe(
            rssm.initial(B, "cpu"), other_embed, other_action, is_first, torch.Generator().manual_seed(9)
        )
        # The earlier steps did differ...
        assert not torch.allclose(a.posterior.deter[:, t - 1], b.posterior.deter[:, t - 1])
        # ...but from the reset on the two runs agree.
        torch.testing.assert_close(a.posterior.deter[:, t:], b.posterior.deter[:, t:])
        torch.testing.assert_close(a.post_logits[:, t:], b.post_logits[:, t:])
        torch.testing.assert_close(a.posterior.stoch[:, t:], b.posterior.stoch[:, t:])
        # A fresh run on the sub-sequence from t gives the same deter and logits at t.
        sub = rssm.observe(
            rssm.initial(B, "cpu"),
            embed[:, t:],
            action[:, t:],
            is_first[:, t:],
            torch.Generator().manual_seed(1),
        )
        torch.testing.assert_close(sub.posterior.deter[:, 0], a.posterior.deter[:, t])
        torch.testing.assert_close(sub.post_logits[:, 0], a.post_logits[:, t])
        # Without the reset the history does leak into step t.
        is_first[:, t] = False
        c = rssm.observe(start, embed, action, is_first, torch.Generator().manual_seed(9))
        d = rssm.observe(
            rssm.initial(B, "cpu"), other_embed, other_action, is_first, torch.Generator().manual_seed(9)
        )
        assert not torch.allclose(c.posterior.deter[:, t], d.posterior.deter[:, t])


def test_is_first_zeroes_the_previous_action():
    """The action before a reset step is ignored: only zeros enter the GRU there."""
    rssm = make_rssm()
    embed, action, is_first = inputs()
    changed = action.clone()
    changed[:, 0] = 0.9  # the action "before" step 0, which is_first masks
    with torch.no_grad():
        a = rssm.observe(rssm.initial(B, "cpu"), embed, action, is_first, torch.Generator().manual_seed(2))
        b = rssm.observe(rssm.initial(B, "cpu"), embed, changed, is_first, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.posterior.deter, b.posterior.deter)


def test_obs_step_matches_observe():
    rssm = make_rssm()
    embed, action, is_first = inputs()
    with torch.no_grad():
        seq = rssm.observe(rssm.initial(B, "cpu"), embed, action, is_first, torch.Generator().manual_seed(6))
        gen = torch.Generator().manual_seed(6)
        state = rssm.initial(B, "cpu")
        for t in range(T):
            state = rssm.obs_step(state, action[:, t], embed[:, t], is_first[:, t], True, gen)
            torch.testing.assert_close(state.deter, seq.posterior.deter[:, t])
            torch.testing.assert_close(state.stoch, seq.posterior.stoch[:, t])


def test_gru_input_equals_tiled_block_linear():
    """Official formulation: block g sees concat([deter_block_g, inputs]) and one block
    linear maps it; GRUInput splits the same weights into a block part and a dense part."""
    torch.manual_seed(0)
    deter, n_in, units, blocks, n = 32, 12, 48, 4, 5
    layer = GRUInput(deter, n_in, units, blocks)
    with torch.no_grad():
        layer.input_part.bias.normal_()  # zero at init: make the bias part of the check
    deter_vec = torch.randn(n, deter)
    x = torch.randn(n, n_in)
    deter_blocks = deter_vec.view(n, blocks, deter // blocks).transpose(0, 1)  # [G, N, D/G]
    got = layer(deter_blocks, x)
    assert got.shape == (blocks, n, units // blocks)

    ub = units // blocks
    w_in = layer.input_part.weight  # [units, n_in]
    tiled_weight = torch.stack(
        [torch.cat([layer.deter_part.weight[g], w_in[g * ub : (g + 1) * ub].T], 0) for g in range(blocks)]
    )  # [G, D/G + I, U/G]
    tiled_bias = layer.input_part.bias.view(blocks, ub)
    tiled_in = torch.cat([deter_blocks, x.expand(blocks, n, n_in)], -1)  # [G, N, D/G + I]
    expected = torch.einsum("gni,giu->gnu", tiled_in, tiled_weight) + tiled_bias[:, None, :]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The flat output, block-major back to [N, units], is block g in columns g*ub..(g+1)*ub.
    flat = got.transpose(0, 1).reshape(n, units)
    g = 2
    manual = (
        deter_vec[:, g * 8 : (g + 1) * 8] @ layer.deter_part.weight[g] + x @ w_in[g * ub : (g + 1) * ub].T
    )
    torch.testing.assert_close(flat[:, g * ub : (g + 1) * ub], manual + tiled_bias[g], rtol=1e-5, atol=1e-5)


def test_core_keeps_deter_in_tanh_range_and_is_differentiable():
    rssm = make_rssm()
    deter = torch.zeros(4, CFG.deter)
    stoch = torch.zeros(4, CFG.classes, CFG.stoch)
    stoch[:, 1, :] = 1.0
    action = torch.randn(4, ACT, requires_grad=True)
    new = rssm.core(deter, stoch, rssm.embed_action(action))
    assert new.shape == (4, CFG.deter)
    # From a zero state the new deter is update * cand with |cand| < 1.
    assert bool((new.abs() < 1).all())
    new.sum().backward()
    assert action.grad is not None and action.grad.abs().sum() > 0
