"""The actor-critic's maths against hand computations written out here: the imagination
loss on a 1x3 trajectory (weights, lambda-returns, return statistics, advantages over
their scale, entropy bonus, policy and value loss elements), the replay value loss
across an episode boundary and a terminal, which parameters each loss term reaches
under the gradient switches, and the slow critic's EMA step."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from dreamrl.agents.dreamer import DreamerAgent
from dreamrl.behaviors.actor_critic import Imagined, ReturnStats, imag_loss, repl_loss
from dreamrl.config import (
    AgentConfig,
    ImagLossConfig,
    ReplLossConfig,
    RetNormConfig,
    ValueConfig,
    build_config,
)
from dreamrl.nets.heads import OneHotDist, TwoHotHead
from dreamrl.run.bench import random_batch
from dreamrl.spaces import Space, replay_spaces

# ----------------------------------------------------------------------------- hand helpers

# The critic's 255 bins: symexp of an even grid over [-20, 20], in float64.
GRID = np.linspace(-20.0, 20.0, 255)
BINS = np.sign(GRID) * np.expm1(np.abs(GRID))
MIX = 0.9  # critic logits below are log(MIX * twohot(v) + (1 - MIX) / 255)


def hand_twohot(x: float) -> np.ndarray:
    """Weights on the two bins around ``x``, linear in the raw value."""
    k = int(np.searchsorted(BINS, x, side="right")) - 1  # BINS[k] <= x < BINS[k + 1]
    upper = (x - BINS[k]) / (BINS[k + 1] - BINS[k])
    out = np.zeros(len(BINS))
    out[k], out[k + 1] = 1 - upper, upper
    return out


def mixed_logits(v: float) -> np.ndarray:
    """Critic logits whose probabilities are ``MIX * twohot(v) + (1 - MIX) / 255``.

    The bins are symmetric around 0, so the uniform part predicts 0 and the mean is
    exactly ``MIX * v``; the log-softmax of these logits is the log of those probabilities.
    """
    return np.log(MIX * hand_twohot(v) + (1 - MIX) / len(BINS))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def hand_ce(logits: np.ndarray, target: float) -> float:
    """Cross-entropy of ``logits [255]`` against two-hot(``target``)."""
    return float(-(hand_twohot(target) * log_softmax(logits)).sum())


def percentile(xs: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's and torch's default), by hand."""
    xs = sorted(xs)
    pos = q / 100 * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


def critic_head() -> TwoHotHead:
    """A critic head; only its bins (and so :meth:`mean` and :meth:`loss`) are used."""
    return TwoHotHead(4, ValueConfig(layers=1, units=8, bins=255))


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# ----------------------------------------------------------------------------- imag_loss

# One imagined trajectory of H + 1 = 3 states.
REWARD = [0.0, 1.0, 4.0]  # reward on arriving at each state (the first is unused)
CONT = [0.9, 0.8, 0.5]  # continue probability at each state
VAL = [1.0, 2.0, 3.0]  # critic means are MIX * VAL = 0.9, 1.8, 2.7
SLOW = [0.5, 1.5, 2.5]  # slow critic means are MIX * SLOW = 0.45, 1.35, 2.25
POLICY_LOGITS = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.5]]
ACTIONS = [2, 0, 1]


def run_imag(cfg: AgentConfig, stats: ReturnStats):
    value_logits = torch.tensor(np.stack([mixed_logits(v) for v in VAL])[None], dtype=torch.float32)
    slow_logits = torch.tensor(np.stack([mixed_logits(v) for v in SLOW])[None], dtype=torch.float32)
    value_logits.requires_grad_(True)
    slow_logits.requires_grad_(True)
    pol_logits = torch.tensor([POLICY_LOGITS], requires_grad=True)
    action = torch.nn.functional.one_hot(torch.tensor([ACTIONS]), 3).float()
    traj = Imagined(action, torch.tensor([REWARD]), torch.tensor([CONT]))
    out = imag_loss(traj, OneHotDist(pol_logits), value_logits, slow_logits, critic_head(), stats, cfg)
    return out, pol_logits, value_logits, slow_logits


def hand_imag(cfg: AgentConfig, stats_in: tuple[float, float]) -> dict[str, Any]:
    """Every quantity of the imagination loss, in plain float arithmetic."""
    lcfg, ncfg = cfg.imag_loss, cfg.retnorm
    val = [MIX * v for v in VAL]
    slow = [MIX * v for v in SLOW]
    tar = slow if lcfg.slowtar else val
    disc = 1.0 if cfg.contdisc else 1 - 1 / cfg.horizon
    # weight_t = prod_{i <= t} (disc * c_i) / disc
    weight = [CONT[0], disc * CONT[0] * CONT[1], disc**2 * CONT[0] * CONT[1] * CONT[2]]
    # R_1 = r_2 + disc c_2 v_2 (the last return bootstraps fully);
    # R_0 = r_1 + disc c_1 ((1 - lam) v_1 + lam R_1).
    lam = lcfg.lam
    r1 = REWARD[2] + disc * CONT[2] * tar[2]
    r0 = REWARD[1] + disc * CONT[1] * ((1 - lam) * tar[1] + lam * r1)
    ret = [r0, r1]
    lo = (1 - ncfg.rate) * stats_in[0] + ncfg.rate * percentile(ret, ncfg.perclo)
    hi = (1 - ncfg.rate) * stats_in[1] + ncfg.rate * percentile(ret, ncfg.perchi)
    scale = max(ncfg.limit, hi - lo)
    adv = [(ret[t] - tar[t]) / scale for t in range(2)]
    logp = [log_softmax(np.array(row)) for row in POLICY_LOGITS]
    ent = [float(-(np.exp(lp) * lp).sum()) for lp in logp]
    policy = [-weight[t] * (logp[t][ACTIONS[t]] * adv[t] + lcfg.actent * ent[t]) for t in range(2)]
    value = [
        weight[t]
        * (hand_ce(mixed_logits(VAL[t]), ret[t]) + lcfg.slowreg * hand_ce(mixed_logits(VAL[t]), slow[t]))
        for t in range(2)
    ]
    return dict(
        weight=weight,
        ret=ret,
        lo=lo,
        hi=hi,
        scale=scale,
        adv=adv,
        logp=logp,
        ent=ent,
        policy=policy,
        value=value,
    )


CFG_SCALED = AgentConfig(
    contdisc=True,
    imag_loss=ImagLossConfig(slowtar=False, lam=0.8, actent=0.1, slowreg=0.5),
    retnorm=RetNormConfig(rate=0.5, limit=1.0, perclo=5.0, perchi=95.0),
)
CFG_DISCOUNTED = AgentConfig(
    contdisc=False,
    horizon=10,
    imag_loss=ImagLossConfig(slowtar=True, lam=0.8, actent=0.1, slowreg=1.0),
    retnorm=RetNormConfig(rate=0.01, limit=1.0),
)


def test_imag_loss_hand_computed_with_return_scale_above_one():
    """contdisc: disc = 1, weights are plain products of continues; returns bootstrap from
    the critic. Statistics (-2, 3) in, rate 0.5: the scale comes out near 2.79."""
    stats = ReturnStats(torch.tensor(-2.0), torch.tensor(3.0))
    out, *_ = run_imag(CFG_SCALED, stats)
    h = hand_imag(CFG_SCALED, (-2.0, 3.0))
    assert h["weight"] == pytest.approx([0.9, 0.72, 0.36])
    # R_1 = 4 + 0.5 * 2.7 = 5.35; R_0 = 1 + 0.8 * (0.2 * 1.8 + 0.8 * 5.35) = 4.712.
    assert h["ret"] == pytest.approx([4.712, 5.35])
    # P5 = 4.712 + 0.05 * 0.638, P95 = 4.712 + 0.95 * 0.638; EMA at rate 0.5.
    assert h["lo"] == pytest.approx(0.5 * -2 + 0.5 * 4.7439)
    assert h["hi"] == pytest.approx(0.5 * 3 + 0.5 * 5.3181)
    assert h["scale"] == pytest.approx(2.7871) and h["scale"] > 1.5

    assert out.returns.shape == (1, 2)
    np.testing.assert_allclose(f64(out.returns[0]), h["ret"], rtol=1e-6)
    assert out.return_stats.lo.item() == pytest.approx(h["lo"], rel=1e-6)
    assert out.return_stats.hi.item() == pytest.approx(h["hi"], rel=1e-6)
    # Pure: the statistics handed in are not changed.
    assert stats.lo.item() == -2.0 and stats.hi.item() == 3.0
    assert set(out.losses) == {"policy", "value"}
    assert out.losses["policy"].shape == out.losses["value"].shape == (1, 2)
    np.testing.assert_allclose(f64(out.losses["policy"][0]), h["policy"], rtol=1e-5)
    np.testing.assert_allclose(f64(out.losses["value"][0]), h["value"], rtol=1e-5)
    m = out.metrics
    assert m["imag/ret_scale"].item() == pytest.approx(h["scale"], rel=1e-6)
    assert m["actor/adv_mag"].item() == pytest.approx(np.mean(np.abs(h["adv"])), rel=1e-5)
    assert m["actor/ent"].item() == pytest.approx(np.mean(h["ent"][:2]), rel=1e-6)
    assert m["imag/weight"].item() == pytest.approx(np.mean(h["weight"]), rel=1e-6)
    assert m["imag/val"].item() == pytest.approx(MIX * np.mean(VAL), rel=1e-5)
    # Dividing by the scale mattered: unscaled advantages give a different policy loss.
    unscaled = [
        -h["weight"][t] * (h["logp"][t][ACTIONS[t]] * h["adv"][t] * h["scale"] + 0.1 * h["ent"][t])
        for t in range(2)
    ]
    assert not np.allclose(f64(out.losses["policy"][0]), unscaled, rtol=1e-2)


def test_imag_loss_hand_computed_discounted_slow_target_scale_clamped():
    """Without contdisc the discount 0.9 multiplies the continues in the weights and the
    returns; slowtar bootstraps from the slow critic; a small spread is clamped to 1."""
    stats = ReturnStats(torch.tensor(0.0), torch.tensor(0.0))
    out, *_ = run_imag(CFG_DISCOUNTED, stats)
    h = hand_imag(CFG_DISCOUNTED, (0.0, 0.0))
    assert h["weight"] == pytest.approx([0.9, 0.648, 0.2916])
    # R_1 = 4 + 0.9 * 0.5 * 2.25 = 5.0125; R_0 = 1 + 0.72 * (0.2 * 1.35 + 0.8 * 5.0125) = 4.0816.
    assert h["ret"] == pytest.approx([4.0816, 5.0125])
    assert h["scale"] == 1.0 and h["hi"] - h["lo"] < 0.01
    # Advantages against the slow critic: R - slow, not R - critic.
    assert h["adv"] == pytest.approx([4.0816 - 0.45, 5.0125 - 1.35])
    np.testing.assert_allclose(f64(out.returns[0]), h["ret"], rtol=1e-6)
    assert out.return_stats.lo.item() == pytest.approx(h["lo"], rel=1e-5)
    assert out.return_stats.hi.item() == pytest.approx(h["hi"], rel=1e-5)
    assert out.metrics["imag/ret_scale"].item() == 1.0
    np.testing.assert_allclose(f64(out.losses["policy"][0]), h["policy"], rtol=1e-5)
    np.testing.assert_allclose(f64(out.losses["value"][0]), h["value"], rtol=1e-5)


def test_imag_loss_gradients_are_reinforce_and_two_hot_cross_entropy():
    """The advantage and the weights are constants: d policy / d logits is
    ``w (adv (p - onehot) + actent p (log p + H))``; the value loss gives
    ``w ((p - twohot(R)) + slowreg (p - twohot(slow)))``; nothing reaches the slow
    critic, the critic gets nothing from the policy loss, and the last state none."""
    cfg = CFG_SCALED
    out, pol_logits, value_logits, slow_logits = run_imag(
        cfg, ReturnStats(torch.tensor(-2.0), torch.tensor(3.0))
    )
    h = hand_imag(cfg, (-2.0, 3.0))
    g_pol, g_val_from_pol = torch.autograd.grad(
        out.losses["policy"].sum(), [pol_logits, value_logits], allow_unused=True, retain_graph=True
    )
    assert g_val_from_pol is None
    expected = np.zeros((3, 3))
    for t in range(2):
        lp = h["logp"][t]
        p = np.exp(lp)
        onehot = np.eye(3)[ACTIONS[t]]
        expected[t] = h["weight"][t] * (
            h["adv"][t] * (p - onehot) + cfg.imag_loss.actent * p * (lp + h["ent"][t])
        )
    np.testing.assert_allclose(f64(g_pol[0]), expected, rtol=1e-5, atol=1e-7)

    g_val, g_slow, g_pol_from_val = torch.autograd.grad(
        out.losses["value"].sum(), [value_logits, slow_logits, pol_logits], allow_unused=True
    )
    assert g_slow is None and g_pol_from_val is None
    expected = np.zeros((3, 255))
    for t in range(2):
        p = np.exp(mixed_logits(VAL[t]))
        target = hand_twohot(h["ret"][t]) + cfg.imag_loss.slowreg * hand_twohot(MIX * SLOW[t])
        expected[t] = h["weight"][t] * ((1 + cfg.imag_loss.slowreg) * p - target)
    np.testing.assert_allclose(f64(g_val[0]), expected, rtol=1e-4, atol=1e-7)
    assert (g_val[0, 2] == 0).all() and (g_val[0, :2] != 0).any()


# ----------------------------------------------------------------------------- repl_loss

# Six replayed steps: an episode is cut (is_last, not terminal) at t=2, a new one runs
# from t=3 and terminates at t=4, a third starts at t=5.
R_LAST = [0, 0, 1, 0, 1, 0]
R_TERM = [0, 0, 0, 0, 1, 0]
R_REW = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
R_BOOT = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
R_SLOW = [1.0, -2.0, 3.0, 0.5, 7.0, 2.0]  # slow critic means are MIX * R_SLOW
CFG_REPL = AgentConfig(horizon=10, repl_loss=ReplLossConfig(lam=0.5, slowreg=0.5))


def test_repl_loss_hand_computed_across_a_cut_and_a_terminal():
    """disc = 1 - 1/10 = 0.9, lam = 0.5, returns bootstrapped from the imagined returns:

    R_4 = r_5 + 0.9 * b_5                           = 5 + 54            = 59
    R_3 = r_4 (terminal at 4: nothing follows)      = 4
    R_2 = r_3 + 0.9 (0.5 b_3 + 0.5 R_3)             = 3 + 0.9 * 22      = 22.8
    R_1 = r_2 + 0.9 b_2 (is_last at 2 cuts lambda)  = 2 + 27            = 29
    R_0 = r_1 + 0.9 (0.5 b_1 + 0.5 R_1)             = 1 + 0.9 * 24.5    = 23.05

    The loss is masked at the last step of an episode (t = 2 and 4; t = 5 is dropped).
    """
    ret = [23.05, 29.0, 22.8, 4.0, 59.0]
    rng = np.random.default_rng(0)
    vlog = rng.normal(0.0, 2.0, (6, 255))
    slog = np.stack([mixed_logits(v) for v in R_SLOW])
    weight = [1 - x for x in R_LAST]
    slowreg = CFG_REPL.repl_loss.slowreg
    expected = [
        weight[t] * (hand_ce(vlog[t], ret[t]) + slowreg * hand_ce(vlog[t], MIX * R_SLOW[t])) for t in range(5)
    ]
    assert expected[2] == 0 and expected[4] == 0 and min(expected[0], expected[1], expected[3]) > 1

    value_logits = torch.tensor(vlog[None], dtype=torch.float32, requires_grad=True)
    slow_logits = torch.tensor(slog[None], dtype=torch.float32, requires_grad=True)
    out = repl_loss(
        torch.tensor([R_LAST], dtype=torch.bool),
        torch.tensor([R_TERM], dtype=torch.bool),
        torch.tensor([R_REW]),
        torch.tensor([R_BOOT]),
        value_logits,
        slow_logits,
        critic_head(),
        CFG_REPL,
    )
    assert set(out) == {"repval"} and out["repval"].shape == (1, 5)
    np.testing.assert_allclose(f64(out["repval"][0]), expected, rtol=1e-5)

    g_val, g_slow = torch.autograd.grad(out["repval"].sum(), [value_logits, slow_logits], allow_unused=True)
    assert g_slow is None
    zero_rows = [2, 4, 5]
    assert (g_val[0, zero_rows] == 0).all()
    p = np.exp(log_softmax(vlog))
    for t in (0, 1, 3):
        hand = (1 + slowreg) * p[t] - hand_twohot(ret[t]) - slowreg * hand_twohot(MIX * R_SLOW[t])
        np.testing.assert_allclose(f64(g_val[0, t]), hand, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- gradient routing

VECTOR = {"vector": Space("float32", (4,))}
DISCRETE = Space("int32", (), 3)
SMALL = {"batch_size": 2, "batch_length": 6, "agent.imag_length": 3}


def make_agent(**overrides: object) -> DreamerAgent:
    config = build_config(
        ["debug"], {"task": "test", "seed": 0, "compute.device": "cpu", **SMALL, **overrides}
    )
    return DreamerAgent(config, VECTOR, DISCRETE)


def make_batch(agent: DreamerAgent, seed: int = 0) -> dict[str, np.ndarray]:
    """Random replay data: an episode ends (terminal) at t=2, the next starts at t=3."""
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    B, T = agent.config.batch_size, agent.config.batch_length
    out = random_batch(spaces, B, T, np.random.default_rng(seed))
    out["is_first"][:, 3] = True
    out["is_last"][:, 2] = True
    out["is_terminal"][:, 2] = True
    return out


def grad_reach(agent: DreamerAgent) -> dict[str, dict[str, bool]]:
    """For every loss term, whether its mean has a nonzero gradient on each module."""
    # The reward head's and critic's output layers start at zero, which would block every
    # gradient through them; give them small random weights.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in (agent.wm.reward.out, agent.ac.critic.out):
            layer.weight.copy_(0.1 * torch.randn(layer.weight.shape, generator=gen))
    groups = {
        "encoder": agent.wm.encoder,
        "rssm": agent.wm.rssm,
        "decoder": agent.wm.decoder,
        "reward": agent.wm.reward,
        "cont": agent.wm.cont,
        "actor": agent.ac.actor,
        "critic": agent.ac.critic,
    }
    params = {name: [p for p in m.parameters() if p.requires_grad] for name, m in groups.items()}
    flat = [p for ps in params.values() for p in ps]
    assert len(flat) == sum(1 for m in (agent.wm, agent.ac) for p in m.parameters() if p.requires_grad)
    with agent.autocast():
        losses, _, _ = agent.losses(agent.to_batch(make_batch(agent)))
    reach: dict[str, dict[str, bool]] = {}
    for key, value in losses.items():
        grads = torch.autograd.grad(value.mean(), flat, allow_unused=True, retain_graph=True)
        it = iter(grads)
        reach[key] = {}
        for name, ps in params.items():
            gs = [next(it) for _ in ps]
            reach[key][name] = any(g is not None and bool((g != 0).any()) for g in gs)
    return reach


WORLD_MODEL = ("encoder", "rssm", "decoder", "reward", "cont")


@pytest.fixture(scope="module")
def reach_default() -> dict[str, dict[str, bool]]:
    """The paper's switches: ac_grads off, reward_grad and repval_grad on."""
    agent = make_agent()
    assert not agent.config.agent.ac_grads
    assert agent.config.agent.reward_grad and agent.config.agent.repval_grad
    return grad_reach(agent)


@pytest.fixture(scope="module")
def reach_flipped() -> dict[str, dict[str, bool]]:
    """Every switch the other way: ac_grads on, reward_grad and repval_grad off."""
    return grad_reach(
        make_agent(**{"agent.ac_grads": True, "agent.reward_grad": False, "agent.repval_grad": False})
    )


def test_world_model_losses_reach_the_rssm_and_encoder(reach_default, reach_flipped):
    for reach in (reach_default, reach_flipped):
        for key in ("vector", "con", "dyn", "rep"):
            assert reach[key]["rssm"] and reach[key]["encoder"], key
            assert not reach[key]["actor"] and not reach[key]["critic"], key
        assert reach["vector"]["decoder"] and reach["con"]["cont"]


def test_policy_loss_reaches_the_world_model_only_with_ac_grads(reach_default, reach_flipped):
    off, on = reach_default["policy"], reach_flipped["policy"]
    assert off["actor"] and on["actor"]
    assert not any(off[m] for m in WORLD_MODEL), off
    # The advantage is a constant: the policy loss never trains the critic.
    assert not off["critic"] and not on["critic"]
    # ac_grads: through the imagination start states into the representation only.
    assert on["rssm"] and on["encoder"]
    assert not on["reward"] and not on["cont"] and not on["decoder"]


def test_imagined_value_loss_reaches_the_world_model_only_with_ac_grads(reach_default, reach_flipped):
    off, on = reach_default["value"], reach_flipped["value"]
    assert off["critic"] and on["critic"]
    assert not off["actor"] and not on["actor"]
    assert not any(off[m] for m in WORLD_MODEL), off
    assert on["rssm"] and on["encoder"]


def test_reward_loss_shapes_the_representation_only_with_reward_grad(reach_default, reach_flipped):
    on, off = reach_default["rew"], reach_flipped["rew"]
    assert on["reward"] and off["reward"]
    assert on["rssm"] and on["encoder"]
    assert not off["rssm"] and not off["encoder"], off
    assert not any(off[m] for m in ("decoder", "cont", "actor", "critic")), off


def test_replay_value_loss_reaches_the_world_model_only_with_repval_grad(reach_default, reach_flipped):
    on, off = reach_default["repval"], reach_flipped["repval"]
    assert on["critic"] and off["critic"]
    assert on["rssm"] and on["encoder"]
    assert not any(off[m] for m in WORLD_MODEL), off
    assert not on["actor"] and not off["actor"]


# ----------------------------------------------------------------------------- slow critic


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def assert_lerp(
    slow_after: list[torch.Tensor], slow: list[torch.Tensor], critic: list[torch.Tensor], rate: float
):
    """``slow_after == (1 - rate) * slow + rate * critic``: bit for bit as torch.lerp's
    documented ``slow + rate * (critic - slow)``, and within one float32 ulp of the
    operands of the exact value in float64."""
    assert len(slow_after) == len(slow) == len(critic) > 0
    for got, s, c in zip(slow_after, slow, critic, strict=True):
        assert torch.equal(got, s + rate * (c - s))
        exact = (1 - rate) * s.double() + rate * c.double()
        ulp = torch.from_numpy(np.spacing(torch.maximum(s.abs(), c.abs()).numpy())).double()
        assert bool(((got.double() - exact).abs() <= ulp).all())


def differs(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_slow_critic_moves_toward_the_updated_critic():
    rate = 0.25
    agent = make_agent(**{"agent.opt.warmup": 0, "agent.opt.lr": 1e-3, "agent.slowvalue.rate": rate})
    assert agent.config.agent.slowvalue.every == 1
    for step in range(2):
        slow0, critic0 = snapshot(agent.ac.slow_critic), snapshot(agent.ac.critic)
        result = agent.train_step(make_batch(agent, seed=step))
        assert not result.nonfinite
        slow1, critic1 = snapshot(agent.ac.slow_critic), snapshot(agent.ac.critic)
        assert differs(critic1, critic0)  # the optimiser moved the critic
        assert differs(slow1, slow0)  # and the slow critic followed
        # Toward the critic's weights after the optimiser step, not before it.
        assert_lerp(slow1, slow0, critic1, rate)
        stale = [s + rate * (c - s) for s, c in zip(slow0, critic0, strict=True)]
        assert differs(slow1, stale)
        assert int(agent.ac.slow_updates) == step + 1
    assert not any(p.requires_grad for p in agent.ac.slow_critic.parameters())


def test_slow_critic_every_skips_the_calls_in_between():
    rate = 0.25
    agent = make_agent(
        **{
            "agent.opt.warmup": 0,
            "agent.opt.lr": 1e-3,
            "agent.slowvalue.rate": rate,
            "agent.slowvalue.every": 2,
        }
    )
    for step in range(4):
        slow0, critic0 = snapshot(agent.ac.slow_critic), snapshot(agent.ac.critic)
        assert not agent.train_step(make_batch(agent, seed=step)).nonfinite
        slow1, critic1 = snapshot(agent.ac.slow_critic), snapshot(agent.ac.critic)
        if step % 2 == 0:  # calls 0 and 2 update, as the official count % every == 0
            assert differs(slow1, slow0)
            assert_lerp(slow1, slow0, critic1, rate)
        else:  # the critic moved, the slow critic stayed put
            assert differs(critic1, critic0)
            assert not differs(slow1, slow0)
        assert int(agent.ac.slow_updates) == step + 1
