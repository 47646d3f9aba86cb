"""The three world models behind one interface (``agent.wm``): shapes of every method,
training lowers the loss, save/load and policy states round trip, a CLI run resumes
and is diagnosed, the decoder-free model's gradients go where its docstring says, and
the pixel predictor learns an exactly predictable toy world."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamrl.agent import Agent
from dreamrl.cli import main
from dreamrl.config import ConfigError, build_config
from dreamrl.run.bench import random_batch
from dreamrl.run.checkpoint import list_checkpoints
from dreamrl.run.logging import read_metrics
from dreamrl.spaces import Space, action_width, replay_spaces
from dreamrl.world_models import make_world_model
from dreamrl.world_models.base import Batch, map_state, state_items
from dreamrl.world_models.decoderfree import PROBE_PREFIX
from dreamrl.world_models.redundancy import r2dreamer_loss

WMS = ["rssm", "decoderfree", "pixel"]
VECTOR = {"vector": Space("float32", (4,))}
IMAGE = {"image": Space("uint8", (64, 64, 3)), "vector": Space("float32", (3,))}
DISCRETE = Space("int32", (), 3)
CONTINUOUS = Space("float32", (2,))
OBS = [pytest.param(VECTOR, DISCRETE, id="vector"), pytest.param(IMAGE, CONTINUOUS, id="image")]
SMALL = {"batch_size": 2, "batch_length": 8}  # the debug model on short batches: cheap


def make_agent(wm, obs=VECTOR, act=DISCRETE, presets=("debug",), **overrides):
    config = build_config(
        list(presets), {"task": "test", "seed": 0, "compute.device": "cpu", "agent.wm": wm, **overrides}
    )
    return Agent(config, obs, act)


def fake_batch(agent: Agent, seed: int = 0) -> dict[str, np.ndarray]:
    """A replay-shaped random batch, a second episode starting at t=5."""
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    B, T = agent.config.batch_size, agent.config.batch_length
    out = random_batch(spaces, B, T, np.random.default_rng(seed))
    out["is_first"][:, 5] = True
    out["is_last"][:, 4] = True
    out["is_terminal"][:, 4] = True
    return out


def obs_batch(agent: Agent, n: int, first: bool, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs: dict[str, np.ndarray] = {}
    for key, space in agent.obs_space.items():
        if space.dtype == "uint8":
            obs[key] = rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
        else:
            obs[key] = rng.normal(size=(n, *space.shape)).astype(np.float32)
    obs["is_first"] = np.full(n, first)
    return obs


def lead_dims(state, n: int) -> set[tuple[int, ...]]:
    """The leading ``n`` dims of every tensor of a state."""
    return {tuple(t.shape[:n]) for t in state_items(state).values()}


def wm_total(agent: Agent, batch: Batch) -> float:
    """The world model's weighted loss on ``batch``, sampled with a fixed generator."""
    with torch.no_grad():
        losses = agent.wm.loss(batch, torch.Generator().manual_seed(0)).losses
    return float(sum(agent.scales[k] * v.mean() for k, v in losses.items()))


# ---------------------------------------------------------------------------- 1. shapes


@pytest.mark.parametrize("obs, act", OBS)
@pytest.mark.parametrize("wm", WMS)
def test_every_method_gives_the_documented_shapes(wm, obs, act):
    agent = make_agent(wm, obs, act, **SMALL)
    model = agent.wm
    batch = agent.to_batch(fake_batch(agent))
    B, T = batch.is_first.shape
    F, A, H = model.feat_dim, action_width(act), 3
    latent = wm != "pixel"
    with torch.no_grad():
        states, logits = model.observe(batch, torch.Generator().manual_seed(0))
        assert lead_dims(states, 2) == {(B, T)}
        assert model.features(states).shape == (B, T, F)
        codes = model.codes(states)
        assert (codes is None) == (not latent) and (logits is None) == (not latent)
        if latent:
            C, S = agent.config.agent.dyn.rssm.classes, agent.config.agent.dyn.rssm.stoch
            assert logits.shape == codes.shape == (B, T, C, S)
            assert torch.all(codes.sum(-2) == 1)  # one-hot over the classes
        assert model.predicted_reward(states).shape == model.predicted_continue(states).shape == (B, T)
        p = model.predicted_continue(states)
        assert torch.all((p >= 0) & (p <= 1))

        # One acting step from the initial state.
        step_obs = {k: v[:, 0] for k, v in batch.obs.items()}
        one = model.observe_step(model.initial(B, "cpu"), torch.zeros(B, A), step_obs, batch.is_first[:, 0])
        assert lead_dims(one, 1) == {(B,)} and lead_dims(model.initial(B, "cpu"), 1) == {(B,)}
        assert model.features(one).shape == (B, F)

        # Imagination from the last observed state, under a policy and under given actions.
        start = map_state(lambda t: t[:, -1], states)
        feat, taken = model.imagine(start, lambda f: torch.tanh(f[:, :A]), H)
        assert feat.shape == (B, H + 1, F) and taken.shape == (B, H, A)
        torch.testing.assert_close(feat[:, 0], model.features(start))  # the start's first
        given = torch.nn.functional.one_hot(torch.arange(B * H) % A, A).float().view(B, H, A)
        feat, taken = model.imagine(start, given, H, dtype=torch.float64)
        assert feat.shape == (B, H + 1, F) and feat.dtype == torch.float64
        assert torch.equal(taken, given)
        imagined, prior = model.imagine_states(start, given, H, torch.Generator().manual_seed(0))
        assert lead_dims(imagined, 2) == {(B, H)}
        assert model.features(imagined).shape == (B, H, F)
        assert (prior is None) == (not latent)
        if latent:
            assert prior.shape == (B, H, C, S) and model.codes(imagined).shape == (B, H, C, S)
        else:
            assert model.codes(imagined) is None

        # Decoding: every key for rssm and pixel, the probe's for decoderfree.
        assert model.decode_is_probe == (wm == "decoderfree")
        assert set(model.decoded_spaces) == set(obs)
        for which, (s, length) in {"observed": (states, T), "imagined": (imagined, H)}.items():
            decoded = model.decode(s)
            assert set(decoded) == set(obs), which
            for key, value in decoded.items():
                space = obs[key]
                if space.is_image:
                    assert value.shape == (B, length, *space.shape), (which, key)
                    assert value.min() >= 0 and value.max() <= 1, (which, key)
                else:
                    assert value.shape == (B, length, space.size), (which, key)
        if wm == "pixel":  # real steps decode to the observations themselves
            for key, value in model.decode(states).items():
                true = batch.obs[key].float() / 255.0 if obs[key].is_image else batch.obs[key]
                torch.testing.assert_close(value, true)


def test_the_pixel_state_is_a_stack_of_the_last_frames():
    agent = make_agent("pixel", VECTOR, DISCRETE, **SMALL, **{"agent.pixel.frames": 3})
    batch = agent.to_batch(fake_batch(agent))
    stacks = agent.wm.observe(batch).states["vector"]  # [B, T, 3, 4]
    v = batch.obs["vector"]
    assert stacks.shape == (2, 8, 3, 4)
    torch.testing.assert_close(stacks[:, 3], v[:, 1:4])  # the last three, oldest first
    torch.testing.assert_close(stacks[:, 5], v[:, 5:6].expand(-1, 3, -1))  # a new episode at t=5
    torch.testing.assert_close(stacks[:, 6], v[:, [5, 5, 6]])


# ---------------------------------------------------------------------------- 2. training


@pytest.mark.parametrize("wm", WMS)
def test_training_on_a_fixed_batch_lowers_the_world_model_loss(wm):
    # The quick preset's learning rate: the paper's moves the debug model slowly.
    short = {"batch_size": 4, "batch_length": 8, "agent.opt.warmup": 0}
    agent = make_agent(wm, presets=("debug", "quick"), **short)
    data = fake_batch(agent)
    batch = agent.to_batch(data)
    wm_terms = set(agent.wm.loss_scales(agent.config.agent.loss_scales))
    assert wm_terms <= set(agent.scales)
    before = wm_total(agent, batch)
    for _ in range(20):
        result = agent.train_step(data)
        assert result.applied
        assert {f"loss/{k}" for k in wm_terms} <= set(result.metrics)
    after = wm_total(agent, batch)
    assert np.isfinite(after) and after < 0.9 * before, (before, after)  # 0.68-0.83 seen


# ---------------------------------------------------------------------------- 3. save / load


@pytest.mark.parametrize("obs, act", OBS)
@pytest.mark.parametrize("wm", WMS)
def test_save_load_round_trip_gives_identical_actions(wm, obs, act, tmp_path):
    agent = make_agent(wm, obs, act, **SMALL, **{"agent.opt.warmup": 0})
    agent.train_step(fake_batch(agent))
    agent.save(tmp_path)
    loaded = Agent.load(tmp_path)
    assert loaded.config.agent.wm == wm and type(loaded.wm) is type(agent.wm)
    assert loaded.updates == agent.updates == 1
    mine, theirs = agent.state_tensors(), loaded.state_tensors()
    assert mine.keys() == theirs.keys()
    for key, value in mine.items():
        assert torch.equal(value, theirs[key]), key

    s1 = s2 = None
    for t in range(4):
        obs_t = obs_batch(agent, 3, first=t == 0, seed=t)
        a1, s1 = agent.policy(obs_t, s1, deterministic=True)
        a2, s2 = loaded.policy(obs_t, s2, deterministic=True)
        np.testing.assert_array_equal(a1, a2)
    # The carried state matters (otherwise carrying it proves nothing).
    later = obs_batch(agent, 3, first=False, seed=9)
    _, fresh = agent.policy(later, None, deterministic=True)
    _, carried = agent.policy(later, s1, deterministic=True)
    assert not torch.equal(agent.wm.features(fresh.model), agent.wm.features(carried.model))

    # The policy state round trips through the tensors a loop checkpoint holds.
    tensors = agent.policy_state_tensors(s1)
    assert all(k.startswith("policy.") for k in tensors) and "policy.action" in tensors
    restored = loaded.policy_state_from_tensors({k: v.clone() for k, v in tensors.items()})
    assert restored is not None and type(restored.model) is type(s1.model)
    assert state_items(restored.model).keys() == state_items(s1.model).keys()
    for key, value in state_items(s1.model).items():
        assert torch.equal(value, state_items(restored.model)[key]), key
    assert torch.equal(restored.action, s1.action)
    a1, _ = agent.policy(later, s1, deterministic=True)
    a2, _ = loaded.policy(later, restored, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    assert loaded.policy_state_from_tensors({}) is None


# ---------------------------------------------------------------------------- 4. CLI


def train_argv(logdir: Path, wm: str, steps: int) -> list[str]:
    """A debug CartPole run; train ratio 8 (an update every 16 env steps) keeps it cheap."""
    return [
        "train",
        "--env",
        "CartPole-v1",
        "--logdir",
        str(logdir),
        "--preset",
        "debug",
        "--steps",
        str(steps),
        "--no-progress",
        f"agent.wm={wm}",
        "run.train_ratio=8",
        "run.eval_every=0",
        "run.eval_eps=2",
        "run.log_every=0",
        "compute.threads=1",
        "compute.device=cpu",
    ]


@pytest.mark.parametrize("wm", WMS)
def test_a_cli_run_resumes_and_is_evaluated_and_diagnosed(wm, tmp_path):
    logdir = tmp_path / wm
    assert main(train_argv(logdir, wm, 300)) == 0
    first = read_metrics(logdir)
    assert list_checkpoints(logdir)[-1][0] == 300
    assert any("eval/return" in r for r in first)  # the run's final evaluation
    updates = Agent.load(logdir).updates
    assert updates > 0 and max(r["train/updates"] for r in first if "train/updates" in r) == updates

    assert main(train_argv(logdir, wm, 400)) == 0
    assert list_checkpoints(logdir)[-1][0] == 400
    later = read_metrics(logdir)[len(first) :]
    trained = [r for r in later if "train/updates" in r]
    assert trained and min(r["step"] for r in later) > 300  # the steps go on from 300
    assert min(r["train/updates"] for r in trained) == updates + 1  # and so do the updates
    resumed = Agent.load(logdir)
    assert resumed.config.agent.wm == wm
    # 100 more env steps at one update per 16: 6 or 7 more updates, not a fresh count.
    assert resumed.updates - updates in (6, 7)
    assert max(r["train/updates"] for r in trained) == resumed.updates

    assert main(["eval", "--logdir", str(logdir), "--episodes", "2"]) == 0
    assert json.loads((logdir / "eval" / "eval-400.json").read_text())["env_steps"] == 400
    window = ["--episodes", "4", "--context", "4", "--horizon", "3"]
    assert main(["diagnose", "--logdir", str(logdir), *window]) == 0
    d = json.loads((logdir / "diagnostics" / "diagnose-000000000400.json").read_text())
    assert len(d["reward_error"]) == len(d["continue_error"]) == 3
    assert ("kl" in d) == ("drift" in d) == (wm != "pixel")
    if wm != "pixel":
        assert len(d["kl"]) == len(d["drift"]) == 3
    assert set(d["obs_error"]) == {"vector"} and len(d["obs_error"]["vector"]) == 3
    assert d["probe"] is (wm == "decoderfree")
    assert main(["whatif", "--logdir", str(logdir), "--t", "2", "--horizon", "3", "--constant", "1"]) == 0
    assert list((logdir / "whatif").glob("whatif-000000000400-*.json"))
    assert main(["report", "--logdir", str(logdir)]) == 0
    assert (logdir / "report.html").is_file()


# ---------------------------------------------------------------------------- 5. gradients


def grads(module: torch.nn.Module) -> dict[str, float]:
    """Each parameter's gradient norm (0 for none)."""
    return {n: 0.0 if p.grad is None else float(p.grad.norm()) for n, p in module.named_parameters()}


@pytest.mark.parametrize("obs, act", OBS)
def test_the_probe_decoder_gives_no_gradient_to_the_model(obs, act):
    agent = make_agent("decoderfree", obs, act, **SMALL)
    model = agent.wm
    batch = agent.to_batch(fake_batch(agent))
    losses = model.loss(batch, torch.Generator().manual_seed(0)).losses
    probe = [k for k in losses if k.startswith(PROBE_PREFIX)]
    assert sorted(probe) == sorted(PROBE_PREFIX + k for k in obs)
    sum(losses[k].mean() for k in probe).backward()
    norms = grads(model)
    assert all(norms[n] > 0 for n in norms if n.startswith("probe.")), norms
    assert all(norms[n] == 0 for n in norms if not n.startswith("probe.")), norms


def test_the_barlow_term_reaches_the_encoder_only_through_the_posterior():
    """``barlow`` trains the projector, the RSSM and the encoder, but the encoder only
    through the posterior features: the embedding it is matched against is a stopped
    target (``r2dreamer_loss`` detaches it). Heads and probe get nothing from it."""
    agent = make_agent("decoderfree", VECTOR, DISCRETE, **SMALL)
    model = agent.wm
    batch = agent.to_batch(fake_batch(agent))
    model.loss(batch, torch.Generator().manual_seed(0)).losses["barlow"].backward()
    norms = grads(model)
    for part in ("projector.", "rssm.", "encoder."):
        assert sum(v for n, v in norms.items() if n.startswith(part)) > 0, part
    for part in ("probe.", "reward.", "cont."):
        assert all(v == 0 for n, v in norms.items() if n.startswith(part)), part

    # The target side alone carries no gradient: with the features fixed, nothing reaches
    # the embedding.
    feat = torch.randn(2, 8, model.feat_dim)
    embed = torch.randn(2, 8, model.encoder.out_dim, requires_grad=True)
    loss = r2dreamer_loss(feat, embed, model.projector)
    assert not loss.requires_grad or torch.autograd.grad(loss, embed, allow_unused=True)[0] is None
    feat.requires_grad_(True)
    loss = r2dreamer_loss(feat, embed, model.projector)
    feat_grad, embed_grad = torch.autograd.grad(loss, [feat, embed], allow_unused=True)
    assert embed_grad is None and feat_grad is not None and feat_grad.abs().sum() > 0


# ---------------------------------------------------------------------------- 6. pixel learns

W = 16  # toy image width and height


def line_world(rng: np.random.Generator, batch: int, length: int) -> Batch:
    """Sequences of the toy world: a one-pixel-wide bright column on a 16x16 black
    image moves one pixel left (action 0) or right (action 1) a step, wrapping round:
    the next frame is an exact function of the frame and the action.

    (A single bright pixel is the same world in one row; but with 1 of 256 pixels lit
    the summed-MSE sigmoid decoder first settles on the blank frame and had not left
    it after 400 updates, even trained alone. A column lights 16.)"""
    pos = rng.integers(0, W, batch)
    act = rng.integers(0, 2, (batch, length))
    frames = np.zeros((batch, length, W, W, 1), np.uint8)
    for t in range(length):
        frames[np.arange(batch), t, :, pos, 0] = 255
        pos = (pos + np.where(act[:, t] == 1, 1, -1)) % W
    first = torch.zeros(batch, length, dtype=torch.bool)
    first[:, 0] = True
    return Batch(
        obs={"image": torch.as_tensor(frames)},
        action=torch.nn.functional.one_hot(torch.as_tensor(act), 2).float(),
        reward=torch.zeros(batch, length),
        is_first=first,
        is_last=torch.zeros(batch, length, dtype=torch.bool),
        is_terminal=torch.zeros(batch, length, dtype=torch.bool),
    )


def one_step_error(model, batch: Batch) -> tuple[float, float]:
    """Mean squared error per pixel of ``decode(imagine_states(...))`` one step on from
    each window's step 2 against the true step 3, and the share of predictions whose
    brightest column is the true one."""
    with torch.no_grad():
        states = model.observe(batch).states
        start = map_state(lambda t: t[:, 2], states)
        imagined = model.imagine_states(start, batch.action[:, 2:3], 1).states
        pred = model.decode(imagined)["image"][:, 0]  # [N, W, W, 1] in [0, 1]
    true = batch.obs["image"][:, 3].float() / 255.0
    hits = pred.mean((1, 3)).argmax(-1) == true.mean((1, 3)).argmax(-1)
    return float((pred - true).square().mean()), float(hits.float().mean())


def test_the_pixel_predictor_learns_an_exactly_predictable_world():
    # Two CNN stages (16x16 -> 4x4): with the debug preset's four a 16x16 image pools to 1x1.
    config = build_config(
        ["debug"],
        {
            "task": "line",
            "agent.wm": "pixel",
            "agent.enc.simple.mults": (2, 3),
            "agent.dec.simple.mults": (2, 3),
        },
    )
    torch.manual_seed(0)
    model = make_world_model({"image": Space("uint8", (W, W, 1))}, Space("int32", (), 2), config.agent)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    test = line_world(np.random.default_rng(1), 64, 4)
    start_error, _ = one_step_error(model, test)
    for _ in range(400):
        loss = model.loss(line_world(rng, 16, 8)).losses["image"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    error, hits = one_step_error(model, test)
    # Predicting a black frame would score 16/256 = 0.0625 (the line missed); the
    # untrained model scores about 0.25 (grey everywhere). Near zero: under 1/20 of
    # the black frame's error, and the line in the right column every time.
    blank = W / W**2
    assert error < blank / 20 and error < start_error / 100, (start_error, error)
    assert hits == 1.0


# ---------------------------------------------------------------------------- 7. config


def test_an_unknown_world_model_is_a_config_error_naming_agent_wm(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"agent\.wm"):
        build_config(["debug"], {"agent.wm": "unknown"})
    good = build_config(["debug"], {"task": "test"}).agent
    with pytest.raises(ConfigError, match=r"agent\.wm: 'unknown' is not a world model"):
        make_world_model(VECTOR, DISCRETE, dataclasses.replace(good, wm="unknown"))
    argv = ["train", "--env", "CartPole-v1", "--logdir", str(tmp_path / "x"), "agent.wm=unknown"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "agent.wm" in err and "Traceback" not in err


def test_diagnostics_of_a_model_that_decodes_nothing_plot_its_rewards(tmp_path):
    """agent.decoderfree.probe=false: no reconstruction at all; the diagnosis still has
    reward, continue, KL and drift, says nothing is decoded, and draws the rewards."""
    from dreamrl.diagnostics import run_diagnostics

    agent = make_agent("decoderfree", **{"agent.decoderfree.probe": False})
    assert agent.wm.decoded_spaces == {}
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    episode = {k: v[0] for k, v in random_batch(spaces, 1, 40, np.random.default_rng(3)).items()}
    d = run_diagnostics(agent, [episode], tmp_path, step=7, context=5, horizon=4, sequences=2)
    assert d is not None
    assert d["obs_error"] == {} and d["recon_error"] == {}
    assert len(d["reward_error"]) == 4 and len(d["kl"]) == 4 and len(d["drift"]) == 4
    assert d["summary"].startswith("Nothing is decoded")
    assert (tmp_path / d["images"]["openloop"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("sequences, rows", [(1, 1), (0, 2)])
def test_the_probe_learns_from_the_first_sequences_only(sequences, rows):
    agent = make_agent("decoderfree", **SMALL, **{"agent.decoderfree.probe_sequences": sequences})
    batch = agent.to_batch(fake_batch(agent))
    losses = agent.wm.loss(batch).losses
    assert losses[PROBE_PREFIX + "vector"].shape == (rows, agent.config.batch_length)
    assert losses["rew"].shape == (2, agent.config.batch_length)


@pytest.mark.parametrize("wm", WMS)
def test_the_training_hook_logs_the_headline_figures_each_model_has(wm, tmp_path):
    """dreamrl train's diagnostics after an evaluation, on episodes long enough for the
    default window (16 observed + 15 imagined): every model logs reward and continue
    errors; only the latent ones KL, drift and latent usage (a KeyError once stopped a
    pixel run at its first evaluation long enough to diagnose)."""
    from types import SimpleNamespace

    from dreamrl.diagnostics.hook import after_eval

    agent = make_agent(wm, **SMALL)
    spaces = replay_spaces(agent.obs_space, agent.act_space)
    episode = {k: v[0] for k, v in random_batch(spaces, 1, 40, np.random.default_rng(5)).items()}
    metrics = after_eval(tmp_path)(agent, SimpleNamespace(episodes=[episode]), 500)
    assert metrics is not None
    assert {"diag/reward_error_1", "diag/reward_error_H", "diag/continue_error_H"} <= set(metrics)
    latent = {"diag/kl_1", "diag/kl_H", "diag/drift_H", "diag/latent_perplexity"}
    if wm == "pixel":
        assert not latent & set(metrics)
    else:
        assert latent <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    assert (tmp_path / "diagnostics" / "diagnose-000000000500.json").is_file()
