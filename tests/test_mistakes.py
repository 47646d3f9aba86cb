"""The lesson's common mistakes as presets: each changes exactly its knob, is warned about,
and trains; and the stochastic variant of a task (noisy and sticky actions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_agent import CONTINUOUS, DISCRETE, VECTOR, fake_batch, make_agent

from dreamrl.behaviors.actor_critic import Imagined, imagined_continue, lambda_return
from dreamrl.config import build_config, diff, warnings_for
from dreamrl.envs.noise import NoisyActions, perturb_action
from dreamrl.presets import MISTAKES
from dreamrl.spaces import Space

KNOBS = {
    "actor_real": {"agent.ac_data"},
    "horizon50": {"agent.imag_length"},
    "horizon100": {"agent.imag_length"},
    "no_continue": {"agent.imag_continue"},
    "kl_weak": {"agent.loss_scales.dyn", "agent.loss_scales.rep"},
    "kl_strong": {"agent.loss_scales.dyn", "agent.loss_scales.rep"},
    "eval_distractors": {"env.dmc.eval_distractor"},
}


def test_every_mistake_is_listed():
    assert set(MISTAKES) == set(KNOBS)


@pytest.mark.parametrize("name", sorted(KNOBS))
def test_each_mistake_changes_exactly_its_knob_and_is_warned_about(name):
    default = build_config(["debug"], {"task": "dmc:cheetah_run"})
    mistaken = build_config(["debug", name], {"task": "dmc:cheetah_run"})
    changed = set(diff(default, mistaken)) - {"presets"}
    assert changed == KNOBS[name]
    assert warnings_for(default) == []
    warned = warnings_for(mistaken)
    assert len(warned) == 1 and any(knob.split(".")[-1] in warned[0] for knob in KNOBS[name])


def test_kl_presets_scale_both_terms_of_the_paper():
    paper = build_config([], {})
    for name, factor in (("kl_weak", 0.01), ("kl_strong", 10.0)):
        scales = build_config([name], {}).agent.loss_scales
        assert scales.dyn == pytest.approx(paper.agent.loss_scales.dyn * factor)
        assert scales.rep == pytest.approx(paper.agent.loss_scales.rep * factor)


@pytest.mark.parametrize("act", [DISCRETE, CONTINUOUS])
def test_actor_real_trains_a_debug_step_on_the_replayed_sequence(act):
    agent = make_agent(VECTOR, act, **{"agent.ac_data": "replay", "agent.opt.warmup": 0})
    before = [p.detach().clone() for p in agent.ac.actor.parameters()]
    result = agent.train_step(fake_batch(agent))
    assert result.applied and agent.updates == 1
    assert {"loss/policy", "loss/value", "loss/repval"} <= set(result.metrics)
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.ac.actor.parameters()))


def test_actor_real_never_imagines(monkeypatch):
    agent = make_agent(VECTOR, DISCRETE, **{"agent.ac_data": "replay"})

    def refuse(*args, **kwargs):
        raise AssertionError("imagined")

    monkeypatch.setattr(agent.wm, "imagine", refuse)
    agent.train_step(fake_batch(agent))  # does not imagine
    imagining = make_agent(VECTOR, DISCRETE)
    monkeypatch.setattr(imagining.wm, "imagine", refuse)
    with pytest.raises(AssertionError, match="imagined"):
        imagining.train_step(fake_batch(imagining))


def test_replayed_returns_are_cut_where_an_episode_ends():
    """With ``last``, the return at step 1 bootstraps from step 2, the episode's last, and
    never reaches the next episode's reward 100 at step 3."""
    from dreamrl.behaviors.actor_critic import imag_loss

    agent = make_agent(VECTOR, DISCRETE)
    cfg = agent.config.agent
    N, T = 1, 4
    feat = torch.zeros(N, T, agent.wm.feat_dim)
    reward = torch.tensor([[0.0, 1.0, 2.0, 100.0]])
    last = torch.tensor([[False, False, True, False]])
    cont = torch.ones(N, T)
    action = torch.nn.functional.one_hot(torch.zeros(N, T, dtype=torch.long), 3).float()
    ac = agent.ac
    out = imag_loss(
        Imagined(action, reward, cont, last),
        ac.actor(feat),
        ac.critic(feat),
        ac.slow_critic(feat),
        ac.critic,
        ac.retnorm.current(),
        cfg,
    )
    lam = cfg.imag_loss.lam
    # The critic predicts 0 (zero-initialised output): R_1 = r_2 = 2, R_0 = r_1 + λ R_1.
    assert out.returns[0, 1].item() == pytest.approx(2.0)
    assert out.returns[0, 0].item() == pytest.approx(1.0 + lam * 2.0)
    assert out.losses["policy"][0, 2].item() == 0.0  # no loss at the episode's last step
    expected = lambda_return(last, 1 - cont, reward, torch.zeros(N, T), 1.0, lam)
    assert torch.allclose(out.returns, expected)


def test_no_continue_never_ends_imagined_episodes():
    cont = torch.tensor([0.1, 0.9])
    cfg = build_config(["no_continue"], {}).agent
    assert imagined_continue(cont, cfg).tolist() == pytest.approx([1 - 1 / 333] * 2)
    assert torch.equal(imagined_continue(cont, build_config([], {}).agent), cont)
    agent = make_agent(VECTOR, DISCRETE, **{"agent.imag_continue": False})
    metrics = agent.train_step(fake_batch(agent)).metrics
    assert metrics["imag/con"] == pytest.approx(1 - 1 / agent.config.agent.horizon)
    assert "loss/con" in metrics  # the head is still trained


# ----------------------------------------------------------------------------- stochastic tasks


def test_perturbed_actions():
    rng = np.random.default_rng(0)
    discrete = Space("int32", (), 3)
    assert perturb_action(np.int32(2), None, discrete, 0.0, 0.0, rng) == 2
    swapped = [perturb_action(np.int32(2), None, discrete, 1.0, 0.0, rng) for _ in range(200)]
    assert set(swapped) == {0, 1, 2}  # always random: every action turns up
    assert all(perturb_action(np.int32(2), np.int32(0), discrete, 0.0, 0.99999, rng) == 0 for _ in range(20))
    box = Space("float32", (2,))
    noisy = np.stack([perturb_action(np.zeros(2, np.float32), None, box, 0.5, 0.0, rng) for _ in range(2000)])
    assert abs(noisy.std() - 0.5) < 0.05 and noisy.min() >= -1 and noisy.max() <= 1
    clipped = perturb_action(np.ones(2, np.float32), None, box, 10.0, 0.0, rng)
    assert np.all(np.abs(clipped) <= 1)


def test_noisy_env_is_stochastic_yet_replays_from_its_seed():
    from dreamrl.envs import make_env

    config = build_config(["debug"], {"task": "Pendulum-v1", "env.action_noise": 0.5})
    env = make_env(config, 0)
    assert isinstance(env, NoisyActions)

    def episode(seed: int) -> list[float]:
        env.reset(seed=seed)
        return [float(env.step(np.zeros(1, np.float32))["reward"]) for _ in range(20)]

    first, again = episode(3), episode(3)
    assert first == again  # the seed fixes the noise too
    clean = make_env(build_config(["debug"], {"task": "Pendulum-v1"}), 0)
    clean.reset(seed=3)
    plain = [float(clean.step(np.zeros(1, np.float32))["reward"]) for _ in range(20)]
    assert plain != first  # the noise reaches the env
    env.close()
    clean.close()


def test_sticky_is_refused_for_atari_and_out_of_range():
    from dreamrl.config import ConfigError

    with pytest.raises(ConfigError, match=r"env\.sticky"):
        build_config([], {"task": "atari:pong", "env.sticky": 0.25})
    with pytest.raises(ConfigError, match=r"env\.sticky"):
        build_config([], {"env.sticky": 1.0})
    with pytest.raises(ConfigError, match=r"env\.action_noise"):
        build_config([], {"env.action_noise": -0.1})
