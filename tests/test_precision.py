"""`compute.precision=bfloat16`: matrix products in bfloat16 under autocast, with the
float32 boundaries the official code keeps (norm statistics, logits, gates, decoder
outputs, losses) and float32 weights, gradients and optimiser state."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dreamrl.agent import Agent
from dreamrl.config import ConfigError, build_config
from dreamrl.nets.layers import BlockRMSNorm, RMSNorm, channel_rms_norm_silu
from dreamrl.precision import autocast
from dreamrl.spaces import Space
from dreamrl.world_models.rssm import previous_actions

from fixtures.autograd import saved_for_backward

OBS = {"image": Space("uint8", (16, 16, 3)), "vector": Space("float32", (5,))}
DISCRETE = Space("int32", (), 3)
CONTINUOUS = Space("float32", (2,))


def make_agent(precision: str, act: Space = DISCRETE, **overrides: object) -> Agent:
    config = build_config(["debug"], {"task": "test", "compute.precision": precision, **overrides})
    return Agent(config, OBS, act)


def random_batch(act: Space = DISCRETE, batch: int = 3, length: int = 8) -> dict:
    B, T = batch, length
    gen = torch.Generator().manual_seed(5)
    if act.discrete:
        action = torch.randint(0, act.classes, (B, T), generator=gen).numpy()
    else:
        action = (torch.rand(B, T, *act.shape, generator=gen) * 2 - 1).numpy()
    return {
        "image": torch.randint(0, 256, (B, T, 16, 16, 3), generator=gen, dtype=torch.uint8).numpy(),
        "vector": torch.randn(B, T, 5, generator=gen).numpy(),
        "action": action,
        "reward": torch.randn(B, T, generator=gen).numpy(),
        "is_first": (torch.arange(T) == 0).expand(B, T).numpy(),
        "is_last": torch.zeros(B, T, dtype=torch.bool).numpy(),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool).numpy(),
    }


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match=r"compute\.precision"):
        build_config(["debug"], {"task": "test", "compute.precision": "float16"})
    with pytest.raises(ValueError, match=r"compute\.precision"):
        autocast("half", torch.device("cpu"))


@pytest.mark.parametrize("act", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_bfloat16_step_keeps_weights_gradients_and_optimiser_float32(act: Space):
    agent = make_agent("bfloat16", act)
    before = {k: v.clone() for k, v in agent.wm.state_dict().items()}
    for _ in range(2):  # the learning rate warms up from 0: the first update moves nothing
        metrics = agent.train_step(random_batch(act)).metrics
    assert metrics["train/skipped"] == 0.0
    assert all(np.isfinite(v) for v in metrics.values())
    params = [p for m in (agent.wm, agent.ac) for p in m.parameters()]
    assert {p.dtype for p in params} == {torch.float32}
    assert {p.grad.dtype for p in params if p.grad is not None} == {torch.float32}
    moments = [
        t for s in agent.opt.state.values() for t in s.values() if torch.is_tensor(t) and t.numel() > 1
    ]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    changed = [k for k, v in agent.wm.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the update moved no weight"


def test_outputs_that_feed_distributions_and_losses_are_float32_under_autocast():
    agent = make_agent("bfloat16")
    batch = agent.to_batch(random_batch())
    B = batch.is_first.shape[0]
    with agent.autocast():
        embed = agent.wm.encoder(batch.obs)
        assert embed.dtype == torch.bfloat16  # autocast is on: the products run in bfloat16
        observed = agent.wm.rssm.observe(
            agent.wm.rssm.initial(B, "cpu"), embed, previous_actions(batch.action), batch.is_first
        )
        post = observed.posterior
        feat = post.features()
        recon = agent.wm.decoder(post.deter.flatten(0, 1), post.stoch.flatten(0, 1).flatten(-2))
        outputs = {
            "post_logits": observed.post_logits,
            "prior_logits": observed.prior_logits,
            "deter": post.deter,
            "stoch": post.stoch,
            "reward": agent.wm.reward(feat),
            "cont": agent.wm.cont(feat),
            "critic": agent.ac.critic(feat),
            "actor": agent.ac.actor(feat).logits,  # type: ignore[attr-defined]
            **{f"recon/{k}": v for k, v in recon.items()},
        }
    wrong = {k: v.dtype for k, v in outputs.items() if v.dtype != torch.float32}
    assert not wrong, wrong


def test_bfloat16_losses_track_float32_losses():
    data = random_batch(batch=4, length=16)
    results = {}
    for precision in ("float32", "bfloat16"):
        agent = make_agent(precision)  # same seed: same weights, same sampling generator
        with agent.autocast():
            losses, _, _ = agent.losses(agent.to_batch(data))
        results[precision] = {k: float(v.detach().mean()) for k, v in losses.items()}
    f32, bf16 = results["float32"], results["bfloat16"]
    for key in ("image", "vector", "rew", "con", "dyn", "rep", "value"):
        assert bf16[key] == pytest.approx(f32[key], rel=0.01, abs=1e-3), key


def test_norms_compute_in_float32_and_keep_the_input_dtype():
    torch.manual_seed(0)
    # Large values whose squares lose most of their digits in bfloat16.
    x = (torch.randn(64, 96) * 300 + 1000).bfloat16()
    norm = RMSNorm(96)
    out = norm(x)
    assert out.dtype == torch.bfloat16
    ref = x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + 1e-4)
    torch.testing.assert_close(out.float(), ref, rtol=2**-8, atol=0)

    blocks = BlockRMSNorm(96, 4)
    xb = x.view(64, 4, 24).transpose(0, 1)  # [G, N, D/G]
    torch.testing.assert_close(blocks(xb).float(), ref.view(64, 4, 24).transpose(0, 1), rtol=2**-8, atol=0)

    maps = (torch.randn(8, 6, 5, 5) * 300 + 1000).bfloat16()
    out_maps = channel_rms_norm_silu(maps, torch.ones(6), 1e-4)
    assert out_maps.dtype == torch.bfloat16
    m = maps.float()
    ref_maps = torch.nn.functional.silu(m * torch.rsqrt(m.square().mean(1, keepdim=True) + 1e-4))
    torch.testing.assert_close(out_maps.float(), ref_maps, rtol=2**-8, atol=1e-6)


def test_bfloat16_policy_acts_in_the_action_space():
    agent = make_agent("bfloat16", CONTINUOUS)
    data = random_batch(CONTINUOUS)
    obs = {k: data[k][:, 0] for k in ("image", "vector", "is_first")}
    actions, state = agent.policy(obs, None)
    assert actions.dtype == np.float32 and actions.shape == (3, 2)
    assert np.all(np.abs(actions) <= 1.0)
    assert state.model.deter.dtype == torch.float32


def test_emulated_bfloat16_is_warned_about(monkeypatch):
    import dreamrl.agents.dreamer

    monkeypatch.setattr(dreamrl.agents.dreamer, "bfloat16_is_native", lambda device: False)
    with pytest.warns(UserWarning, match="emulated"):
        make_agent("bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_agent("float32")


def test_diagnostics_ask_the_model_in_its_training_precision():
    from dreamrl.diagnostics.rollout import WorldModelView

    agent = make_agent("bfloat16")
    view = WorldModelView(agent)
    batch = agent.to_batch(random_batch())
    seen = []
    encoder = agent.wm.encoder
    original = encoder.forward

    def spy(obs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(obs)

    encoder.forward = spy  # type: ignore[method-assign]
    posterior, logits = view.observe(batch, torch.Generator().manual_seed(0))
    assert seen == [True]
    assert logits.dtype == torch.float32 and posterior.deter.dtype == torch.float32
    decoded = view.decode(posterior)
    assert {v.dtype for v in decoded.values()} == {torch.float32}


def test_shared_inputs_are_cast_once_not_once_per_product():
    """Autocast keeps a bfloat16 copy of a product's input for backward at every call: the
    imagined features (actor and critic) and the posterior's weight slice (every step of
    the scan) are cast once by the caller instead."""
    agent = make_agent("bfloat16")
    B, T = 3, 16  # B*T differs from every layer width, so shapes below are unambiguous
    batch = agent.to_batch(random_batch(batch=B, length=T))
    with saved_for_backward() as tensors, agent.autocast():
        agent.losses(batch)
    # One shape per distinct bfloat16 tensor (by address: a tensor saved by several ops counts once).
    by_address: dict[int, tuple[int, ...]] = {}
    for t in tensors:
        if t.dtype == torch.bfloat16:
            by_address.setdefault(t.data_ptr(), tuple(t.shape))
    saved = list(by_address.values())
    cfg = agent.config.agent
    rssm = cfg.dyn.rssm
    # The products see the features [B*T starts, H+1, F] flattened to [B*T*(H+1), F].
    assert saved.count((B * T * (cfg.imag_length + 1), agent.wm.feat_dim)) == 1
    # Weights [hidden, deter] are saved transposed; a cast per scan step would leave T of them.
    assert saved.count((rssm.deter, rssm.hidden)) < T
