"""The configuration tree: frozen dataclasses, built once, saved with the run.

Field names follow the official DreamerV3 ``configs.yaml`` wherever a setting exists
there (``agent.dyn.rssm.deter``, ``run.train_ratio``, ``agent.imag_loss.lam``, ...), so
a reader of the paper's code finds the same knob under the same name. Defaults are the
paper's (the 2024 / Nature version); where dreamrl departs, the field's doc says so.

A config is never mutated. :func:`build_config` composes named presets (see
:mod:`dreamrl.presets`) and ``key=value`` overrides into a new one; derived values are
functions of the config, not fields filled in later.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dreamrl.config_tree import (
    ConfigError,
    diff,
    flatten,
    from_nested,
    get,
    leaf_paths,
    parse_overrides,
    replace,
    to_dict,
)
from dreamrl.config_tree import field_docs as _field_docs

PRECISIONS = ("float32", "bfloat16")  # compute.precision; see dreamrl.precision

# Keys that moved, old -> new. A saved config.json with an old key is read under the new
# one; an override that spells an old key is refused with the new name.
MOVED = {
    "device": "compute.device",
    "run.precision": "compute.precision",
    "run.compile": "compute.compile",
    "run.codec_chunk": "compute.codec_chunk",
    "run.threads": "compute.threads",
}
# Keys that are gone, with what replaced them: a saved config.json drops them on load; an
# override that names one is refused with the explanation.
REMOVED = {
    "run.env_restarts": "env failures are budgeted against progress: see run.env_crash_loop and "
    "run.env_failure_rate",
    "run.env_restart_window": "env failures are budgeted against progress: see run.env_crash_loop "
    "and run.env_failure_rate",
}

__all__ = [
    "Config",
    "ConfigError",
    "build_config",
    "diff",
    "field_docs",
    "flatten",
    "from_dict",
    "parse_overrides",
    "to_dict",
    "validate",
    "warnings_for",
]


def _doc(default: Any, doc: str) -> Any:
    """A dataclass field carrying its documentation (used by the config reference)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed in the config")
    return field(default=default, metadata={"doc": doc})


def _sub(cls: type, doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc})


DISTRACTORS = ("none", "color", "noise")

# --------------------------------------------------------------------------- agent


@dataclass(frozen=True)
class RSSMConfig:
    """Recurrent state-space model: block GRU path plus categorical latents."""

    deter: int = _doc(8192, "Size of the deterministic GRU state h.")
    hidden: int = _doc(1024, "Width of the layers around the GRU (inputs, prior, posterior).")
    stoch: int = _doc(32, "Number of categorical latent variables in z.")
    classes: int = _doc(64, "Classes per categorical latent variable.")
    unimix: float = _doc(0.01, "Uniform mixture on the latent categoricals (1% in the paper).")
    blocks: int = _doc(8, "Block-diagonal groups of the GRU; deter must divide by it.")
    free_nats: float = _doc(1.0, "KL terms below this many nats are clipped (no gradient).")
    imglayers: int = _doc(2, "Hidden layers of the prior (imagination) head.")
    obslayers: int = _doc(1, "Hidden layers of the posterior (observation) head.")
    dynlayers: int = _doc(1, "Block-linear hidden layers inside the GRU cell.")
    outscale: float = _doc(1.0, "Init scale of the latent logit layers.")


@dataclass(frozen=True)
class DynConfig:
    typ: str = _doc("rssm", "Dynamics model type; only 'rssm' exists.")
    rssm: RSSMConfig = _sub(RSSMConfig, "RSSM settings.")


@dataclass(frozen=True)
class EncoderConfig:
    depth: int = _doc(64, "Base channel count of the CNN; stage i has depth * mults[i].")
    mults: tuple[int, ...] = _doc((2, 3, 4, 4), "Channel multipliers, one per CNN stage.")
    layers: int = _doc(3, "MLP layers for vector observations.")
    units: int = _doc(1024, "MLP width for vector observations.")
    kernel: int = _doc(5, "CNN kernel size (unstrided conv, then 2x2 max-pool).")
    symlog: bool = _doc(True, "Squash vector observations with symlog before the MLP.")


@dataclass(frozen=True)
class EncConfig:
    spaces: str = _doc(".*", "Regex over observation keys: the keys the encoder reads (fully matched).")
    typ: str = _doc("simple", "Encoder type; only 'simple' exists.")
    simple: EncoderConfig = _sub(EncoderConfig, "Encoder settings.")


@dataclass(frozen=True)
class DecoderConfig:
    depth: int = _doc(64, "Base channel count of the transposed CNN.")
    mults: tuple[int, ...] = _doc((2, 3, 4, 4), "Channel multipliers, mirrored from the encoder.")
    layers: int = _doc(3, "MLP layers for vector reconstructions.")
    units: int = _doc(1024, "MLP width for vector reconstructions.")
    kernel: int = _doc(5, "CNN kernel size (nearest 2x upsample, then unstrided conv).")
    bspace: int = _doc(8, "Blocks of the block-linear map from deter to the first feature map.")
    outscale: float = _doc(1.0, "Init scale of the output layers.")


@dataclass(frozen=True)
class DecConfig:
    spaces: str = _doc(".*", "Regex over observation keys: the keys the decoder rebuilds (fully matched).")
    typ: str = _doc("simple", "Decoder type; only 'simple' exists.")
    simple: DecoderConfig = _sub(DecoderConfig, "Decoder settings.")


@dataclass(frozen=True)
class RewHeadConfig:
    layers: int = _doc(1, "Hidden layers.")
    units: int = _doc(1024, "Hidden width.")
    bins: int = _doc(255, "Two-hot bins, symexp-spaced over [-20, 20] in symlog space.")
    outscale: float = _doc(0.0, "Init scale of the output layer (0: predicts 0 at start).")


@dataclass(frozen=True)
class ConHeadConfig:
    layers: int = _doc(1, "Hidden layers.")
    units: int = _doc(1024, "Hidden width.")
    outscale: float = _doc(1.0, "Init scale of the output layer.")


@dataclass(frozen=True)
class PolicyConfig:
    layers: int = _doc(3, "Hidden layers.")
    units: int = _doc(1024, "Hidden width.")
    minstd: float = _doc(0.1, "Lower bound of the bounded-normal std (continuous actions).")
    maxstd: float = _doc(1.0, "Upper bound of the bounded-normal std (continuous actions).")
    outscale: float = _doc(0.01, "Init scale of the output layer.")
    unimix: float = _doc(
        0.01,
        "Uniform mixture on discrete action distributions, as the paper states. (The "
        "official code names this setting but its categorical head does not apply it.)",
    )


@dataclass(frozen=True)
class ValueConfig:
    layers: int = _doc(3, "Hidden layers.")
    units: int = _doc(1024, "Hidden width.")
    bins: int = _doc(255, "Two-hot bins, symexp-spaced over [-20, 20] in symlog space.")
    outscale: float = _doc(0.0, "Init scale of the output layer (0: predicts 0 at start).")


@dataclass(frozen=True)
class OptConfig:
    lr: float = _doc(4e-5, "LaProp learning rate (one optimiser over every module).")
    agc: float = _doc(0.3, "Adaptive gradient clipping: |g| <= agc * max(1e-3, |w|) per tensor.")
    eps: float = _doc(1e-20, "LaProp epsilon inside the RMS normaliser.")
    beta1: float = _doc(0.9, "Momentum rate.")
    beta2: float = _doc(0.999, "Second-moment rate.")
    warmup: int = _doc(1000, "Updates over which the learning rate ramps linearly from 0.")


@dataclass(frozen=True)
class LossScales:
    rec: float = _doc(1.0, "Reconstruction (every decoded observation key).")
    rew: float = _doc(1.0, "Reward prediction.")
    con: float = _doc(1.0, "Continue prediction.")
    dyn: float = _doc(1.0, "Dynamics KL: trains the prior toward the (stopped) posterior.")
    rep: float = _doc(0.1, "Representation KL: trains the posterior toward the (stopped) prior.")
    policy: float = _doc(1.0, "Actor loss on imagined trajectories.")
    value: float = _doc(1.0, "Critic loss on imagined trajectories.")
    repval: float = _doc(0.3, "Critic loss on replayed trajectories.")


@dataclass(frozen=True)
class ImagLossConfig:
    slowtar: bool = _doc(False, "Bootstrap returns from the slow critic instead of the critic.")
    lam: float = _doc(0.95, "Lambda of the lambda-return.")
    actent: float = _doc(3e-4, "Entropy bonus of the actor.")
    slowreg: float = _doc(1.0, "Weight of the regulariser toward the slow critic.")


@dataclass(frozen=True)
class ReplLossConfig:
    slowtar: bool = _doc(
        False,
        "Named as in the official config, where it has no effect either: replay returns always "
        "bootstrap from the imagined returns.",
    )
    lam: float = _doc(0.95, "Lambda of the replay lambda-return.")
    slowreg: float = _doc(1.0, "Weight of the regulariser toward the slow critic.")


@dataclass(frozen=True)
class SlowValueConfig:
    rate: float = _doc(0.02, "EMA rate of the slow critic toward the critic.")
    every: int = _doc(1, "Update the slow critic every this many train steps.")


@dataclass(frozen=True)
class RetNormConfig:
    rate: float = _doc(0.01, "EMA rate of the return percentiles.")
    limit: float = _doc(1.0, "Returns are divided by max(limit, P_hi - P_lo).")
    perclo: float = _doc(5.0, "Lower percentile.")
    perchi: float = _doc(95.0, "Upper percentile.")


@dataclass(frozen=True)
class DecoderFreeConfig:
    scale: float = _doc(0.05, "Weight of the redundancy-reduction loss (R2-Dreamer's).")
    offdiag: float = _doc(5e-4, "Weight of the off-diagonal cross-correlations (Barlow Twins' lambda).")
    probe: bool = _doc(True, "Train a probe decoder on stopped latents, to look at what they hold.")
    probe_sequences: int = _doc(
        2, "Sequences of each batch the probe learns from (0: all): it shapes nothing, so a few suffice."
    )


@dataclass(frozen=True)
class PixelConfig:
    frames: int = _doc(2, "Observations stacked into the state: 2 give position and velocity.")
    units: int = _doc(512, "Width of the bottleneck features and of the transition MLP.")
    layers: int = _doc(2, "Hidden layers of the transition MLP.")


ACT_MODES = ("actor", "mpc")
AC_DATA = ("imagination", "replay")
MPC_OPTIMISERS = ("mppi", "cem")


@dataclass(frozen=True)
class MPCConfig:
    optimiser: str = _doc(
        "mppi", "Planner for continuous actions: 'mppi' (TD-MPC2) or 'cem' (PlaNet); discrete: shooting."
    )
    horizon: int = _doc(3, "Steps planned ahead.")
    iterations: int = _doc(6, "Refits of the proposal per env step.")
    samples: int = _doc(512, "Candidate sequences per iteration, the actor's included.")
    elites: int = _doc(64, "Best candidates the proposal is refit to.")
    temperature: float = _doc(0.5, "MPPI's elite weights and shooting's draw: softmax(temperature * return).")
    min_std: float = _doc(0.05, "Smallest std of the proposal after a refit.")
    max_std: float = _doc(2.0, "Largest std of the proposal, and the std each env step starts from.")
    policy_samples: int = _doc(24, "Candidates proposed by rolling the actor through the model.")
    warm_start: bool = _doc(True, "Start from the previous plan shifted by one step (else zeros).")

    @classmethod
    def planet(cls) -> MPCConfig:
        """PlaNet's CEM: 12 steps, 10 iterations, 1000 candidates, top 100, no actor, no
        warm start, std starting at 1 (the ``mpc_cem`` preset)."""
        return cls(
            optimiser="cem",
            horizon=12,
            iterations=10,
            samples=1000,
            elites=100,
            min_std=1e-3,
            max_std=1.0,
            policy_samples=0,
            warm_start=False,
        )


SCHEDULES = ("constant", "linear")  # a learning rate or clip range of a baseline, over run.steps


@dataclass(frozen=True)
class PPOConfig:
    """stable-baselines3's PPO; defaults are SB3's own (RL Zoo's tuned values for a task
    replace them where it has some: docs/baselines.md)."""

    learning_rate: float = _doc(3e-4, "Adam learning rate.")
    lr_schedule: str = _doc(
        "constant", "'constant', or 'linear': from learning_rate down to 0 at run.steps (RL Zoo's lin_)."
    )
    n_steps: int = _doc(2048, "Steps collected from each env per update (the rollout is n_steps x envs).")
    batch_size: int = _doc(64, "Minibatch size.")
    n_epochs: int = _doc(10, "Passes over each rollout.")
    gamma: float = _doc(0.99, "Discount.")
    gae_lambda: float = _doc(0.95, "Lambda of generalised advantage estimation.")
    clip_range: float = _doc(0.2, "Clipping of the probability ratio.")
    clip_schedule: str = _doc("constant", "'constant', or 'linear': clip_range down to 0 at run.steps.")
    ent_coef: float = _doc(0.0, "Entropy bonus.")
    vf_coef: float = _doc(0.5, "Weight of the value loss.")
    max_grad_norm: float = _doc(0.5, "Gradient norm clip.")
    use_sde: bool = _doc(False, "State-dependent exploration (continuous actions).")
    sde_sample_freq: int = _doc(-1, "Steps between noise matrices with use_sde (-1: once per rollout).")
    net_arch: tuple[int, ...] = _doc((), "Hidden widths of the policy and value nets (empty: SB3's, 64x64).")


@dataclass(frozen=True)
class SACConfig:
    """stable-baselines3's SAC (continuous actions); defaults are SB3's own."""

    learning_rate: float = _doc(3e-4, "Adam learning rate (actor, critics and entropy coefficient).")
    lr_schedule: str = _doc("constant", "'constant', or 'linear': down to 0 at run.steps.")
    buffer_size: int = _doc(1_000_000, "Replay buffer capacity in steps (never more than run.steps).")
    learning_starts: int = _doc(100, "Env steps of random actions before the first update.")
    batch_size: int = _doc(256, "Minibatch size.")
    tau: float = _doc(0.005, "Polyak rate of the target critics.")
    gamma: float = _doc(0.99, "Discount.")
    train_freq: int = _doc(1, "Env steps (of each env) between updates.")
    gradient_steps: int = _doc(1, "Gradient steps per update (-1: as many as env steps collected).")
    ent_coef: str = _doc(
        "auto", "Entropy coefficient: a number, 'auto' (learned), or 'auto_0.1' (learned from 0.1)."
    )
    target_update_interval: int = _doc(1, "Gradient steps between target-critic updates.")
    use_sde: bool = _doc(False, "State-dependent exploration.")
    sde_sample_freq: int = _doc(-1, "Steps between noise matrices with use_sde (-1: once per rollout).")
    net_arch: tuple[int, ...] = _doc((), "Hidden widths of the actor and critics (empty: SB3's, 256 x 256).")


@dataclass(frozen=True)
class DQNConfig:
    """stable-baselines3's DQN (discrete actions); defaults are SB3's own."""

    learning_rate: float = _doc(1e-4, "Adam learning rate.")
    lr_schedule: str = _doc("constant", "'constant', or 'linear': down to 0 at run.steps.")
    buffer_size: int = _doc(1_000_000, "Replay buffer capacity in steps (never more than run.steps).")
    learning_starts: int = _doc(100, "Env steps before the first update.")
    batch_size: int = _doc(32, "Minibatch size.")
    tau: float = _doc(1.0, "Rate of the target network's update (1: a copy).")
    gamma: float = _doc(0.99, "Discount.")
    train_freq: int = _doc(4, "Env steps (of each env) between updates.")
    gradient_steps: int = _doc(1, "Gradient steps per update (-1: as many as env steps collected).")
    target_update_interval: int = _doc(10_000, "Env steps between target-network updates.")
    exploration_fraction: float = _doc(0.1, "Share of run.steps over which epsilon falls to its final value.")
    exploration_initial_eps: float = _doc(1.0, "Epsilon of epsilon-greedy at the start.")
    exploration_final_eps: float = _doc(0.05, "Epsilon of epsilon-greedy at the end.")
    max_grad_norm: float = _doc(10.0, "Gradient norm clip.")
    net_arch: tuple[int, ...] = _doc((), "Hidden widths of the Q-network (empty: SB3's, 64 x 64).")


@dataclass(frozen=True)
class BaselineConfig:
    """Model-free baselines from stable-baselines3 (agent.kind ppo, sac or dqn), trained on
    the same envs, observations and evaluation as the Dreamer run (docs/baselines.md)."""

    zoo: bool = _doc(
        True,
        "Start from RL Zoo's tuned hyperparameters for the task where it has some (docs/baselines.md "
        "lists them); presets and key=value overrides still win. False: SB3's defaults.",
    )
    envs: int = _doc(1, "Training envs SB3 steps together (its n_envs; run.envs is the Dreamer loop's).")
    frame_stack: int = _doc(
        1,
        "Observations stacked as the policy's input, the model-free agent's only memory (RL Zoo "
        "stacks 4 on Atari; from pixels one frame shows no velocity). 1: the current one.",
    )
    ppo: PPOConfig = _sub(PPOConfig, "PPO (agent.kind=ppo), any action space.")
    sac: SACConfig = _sub(SACConfig, "SAC (agent.kind=sac), continuous actions.")
    dqn: DQNConfig = _sub(DQNConfig, "DQN (agent.kind=dqn), discrete actions.")


@dataclass(frozen=True)
class AgentConfig:
    kind: str = _doc(
        "dreamer",
        "Which agent trains: 'dreamer' (dreamrl's own loop), or a model-free baseline of "
        "stable-baselines3: 'ppo', 'sac' (continuous actions), 'dqn' (discrete actions); "
        "dreamrl.agents.TRAINERS lists them.",
    )
    act: str = _doc(
        "actor", "How the agent acts: 'actor' (the imagination actor) or 'mpc' (plans in the model)."
    )
    mpc: MPCConfig = _sub(MPCConfig, "Latent model-predictive control (agent.act=mpc).")
    wm: str = _doc("rssm", "World model: 'rssm' (DreamerV3), 'decoderfree' (R2-Dreamer) or 'pixel'.")
    decoderfree: DecoderFreeConfig = _sub(
        DecoderFreeConfig, "Decoder-free world model (agent.wm=decoderfree)."
    )
    pixel: PixelConfig = _sub(PixelConfig, "One-step pixel predictor (agent.wm=pixel).")
    loss_scales: LossScales = _sub(LossScales, "Weights of the loss terms.")
    opt: OptConfig = _sub(OptConfig, "Optimiser.")
    ac_grads: bool = _doc(False, "Let actor-critic gradients reach the imagination start states.")
    dyn: DynConfig = _sub(DynConfig, "Dynamics model.")
    enc: EncConfig = _sub(EncConfig, "Encoder.")
    dec: DecConfig = _sub(DecConfig, "Decoder.")
    rewhead: RewHeadConfig = _sub(RewHeadConfig, "Reward head.")
    conhead: ConHeadConfig = _sub(ConHeadConfig, "Continue head.")
    policy: PolicyConfig = _sub(PolicyConfig, "Actor.")
    value: ValueConfig = _sub(ValueConfig, "Critic.")
    ac_data: str = _doc(
        "imagination",
        "What the actor-critic learns from: 'imagination' (H steps imagined by the world model "
        "from each replayed posterior state, the paper's) or 'replay' (the replayed sequences "
        "themselves: posterior states, the actions really taken, real rewards and terminals, "
        "the returns cut where an episode ends; the replay critic loss then bootstraps from "
        "those returns). 'replay' is the lesson's mistake of training the actor on real data "
        "only (preset actor_real, docs/compare.md).",
    )
    imag_last: int = _doc(0, "Imagine from only the last K posterior steps (0: all of them).")
    imag_length: int = _doc(15, "Imagination horizon H.")
    imag_continue: bool = _doc(
        True,
        "Read the continue head in imagination. False: imagined episodes never end (every "
        "imagined continue is the discount alone), in the actor-critic's returns, the planner's "
        "and the fantasy gap's; the head is still trained and diagnosed. The lesson's 'skipping "
        "the continue head' mistake (preset no_continue, docs/compare.md).",
    )
    horizon: int = _doc(333, "Effective horizon: discount is 1 - 1/horizon.")
    contdisc: bool = _doc(True, "Fold the discount into the continue head's target.")
    imag_loss: ImagLossConfig = _sub(ImagLossConfig, "Actor-critic loss on imagination.")
    repl_loss: ReplLossConfig = _sub(ReplLossConfig, "Critic loss on replay.")
    slowvalue: SlowValueConfig = _sub(SlowValueConfig, "Slow critic.")
    retnorm: RetNormConfig = _sub(RetNormConfig, "Return normalisation.")
    reward_grad: bool = _doc(True, "Let reward-head gradients shape the representation.")
    repval_loss: bool = _doc(True, "Train the critic on replayed trajectories too.")
    repval_grad: bool = _doc(True, "Let the replay critic loss shape the representation.")
    baseline: BaselineConfig = _sub(BaselineConfig, "Model-free baselines (agent.kind ppo, sac, dqn).")


# --------------------------------------------------------------------------- rest


@dataclass(frozen=True)
class ReplayConfig:
    size: int = _doc(5_000_000, "Capacity in env steps (oldest steps are dropped first).")
    online: bool = _doc(True, "Train on each fresh sequence once as soon as it is complete.")
    chunksize: int = _doc(1024, "Steps per replay chunk file written under the run dir.")


@dataclass(frozen=True)
class RunConfig:
    steps: int = _doc(10_000_000_000, "Env steps to train for (agent steps, before action repeat).")
    train_ratio: float = _doc(32.0, "Replayed steps per env step (batch_size*batch_length per update).")
    envs: int = _doc(4, "Training environments, stepped together.")
    env_workers: str = _doc("process", "Where training envs step: 'process' (one worker each) or 'inline'.")
    env_timeout: float = _doc(
        60.0,
        "Seconds a worker may take for one reset or step before it counts as hung and is "
        "restarted (0: wait forever; hangs are only detected with env_workers='process').",
    )
    env_crash_loop: int = _doc(
        5,
        "Failures (raised, died or hung) of one env in a row, each before it completed "
        "env_crash_steps calls since its restart, that stop the run: an env that cannot get going.",
    )
    env_crash_steps: int = _doc(
        10, "Calls (resets and steps) after a restart within which a failure extends a crash loop."
    )
    env_failure_rate: float = _doc(
        0.02,
        "Largest share of one env's last env_failure_window calls that may fail; more stops the "
        "run. Below it every failure restarts the env (truncating its episode) for as long as the "
        "run lasts, each restart counted in env/restarts and logged.",
    )
    env_failure_window: int = _doc(1000, "Calls of one env over which env_failure_rate is measured.")
    diagnose: bool = _doc(
        True, "After each evaluation, compute world-model diagnostics on its episodes (never trained on)."
    )
    skip_limit: int = _doc(
        10, "Consecutive updates skipped for a non-finite loss or gradient before the run stops."
    )
    eval_eps: int = _doc(10, "Episodes per periodic evaluation (deterministic policy, fresh seeds).")
    eval_envs: int = _doc(4, "Environments stepped together during evaluation.")
    eval_max_steps: int = _doc(
        10_000,
        "Agent steps after which an evaluation episode is cut (its return so far is its score; "
        "eval/cut counts such episodes and the log says so): bounds what an evaluation costs "
        "when an untrained policy never ends an episode (an Atari game that waits for FIRE "
        "runs to its own 27,000-step limit). 0: no cut.",
    )
    eval_sample: bool = _doc(
        False,
        "Evaluate the sampling policy instead of its mode: the paper's Atari protocol scores "
        "the policy as it acts in training. The default, the deterministic policy, is what "
        "`dreamrl eval` reports without --stochastic.",
    )
    eval_every: int = _doc(10_000, "Env steps between evaluations (0: never during training).")
    updates: int = _doc(
        10_000,
        "Updates of offline training on offline.dataset, taken before any env step (unused "
        "without a dataset; docs/offline.md).",
    )
    log_every: float = _doc(30.0, "Seconds between metric writes.")
    save_every: float = _doc(600.0, "Seconds between checkpoints (one is always written at the end).")
    keep_checkpoints: int = _doc(2, "Complete checkpoints kept on disk.")
    release_every: int = _doc(
        10,
        "Updates between handing the memory train steps freed back to the OS (glibc's "
        "malloc_trim, jemalloc's purge; 0: never). Bounds how far a long run's resident memory "
        "creeps up; the next step faults its pages in again, which cost 0.25 s at size1m "
        "(docs/performance.md).",
    )


@dataclass(frozen=True)
class OfflineConfig:
    dataset: str = _doc(
        "",
        "A dataset to learn from with no env interaction (`dreamrl train --dataset`): a Minari "
        "dataset id or directory, or a dreamrl run dir whose replay is read. '': none "
        "(docs/offline.md).",
    )
    finetune: bool = _doc(
        False,
        "After the run.updates offline updates, go on training online in `task` for run.steps env "
        "steps with the dataset kept in replay (`--env` beside `--dataset` sets it).",
    )
    eval_every: int = _doc(2_500, "Updates between evaluations during offline training (0: only at its end).")


@dataclass(frozen=True)
class ComputeConfig:
    """Where and how the agent computes: passed to the constructors that need it, never
    patched into a module after it is built. None of it changes what a run learns beyond
    float rounding (the device, precision and compiled kernels round differently)."""

    device: str = _doc("auto", "'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    precision: str = _doc(
        "float32",
        "Compute precision of the train step and the policy: 'float32', or 'bfloat16' (the "
        "official code's default): matrix products and convolutions in bfloat16 under "
        "torch.autocast, norms, logits, gates and losses in float32, weights and optimiser "
        "float32. Fast only where the hardware has bfloat16 units (GPUs from Ampere on; "
        "CPUs with AVX512-BF16 or AMX): 1.6x at size12m on this project's CPU "
        "(docs/performance.md).",
    )
    compile: bool = _doc(
        True,
        "Compile with torch.compile the norm and activation around each CNN layer and the RSSM's "
        "filter and prior steps (on a CPU it builds C++: needs g++). The norms made train steps "
        "from pixels 1.2x faster at size12m, 1.07x at size1m; the RSSM steps 1.07x more at "
        "size1m from pixels, 1.2x on vectors, and nothing at size12m (docs/performance.md). The "
        "first steps pay a compile of seconds to a minute; falls back to eager, with a warning, "
        "where compiling fails.",
    )
    codec_chunk: int = _doc(
        0,
        "Frames the encoder and decoder take at a time in a train step, keeping no activations "
        "and recomputing each chunk's in the backward pass: far less memory for one more "
        "encoder and decoder forward pass (docs/performance.md). Same gradients; 0: the whole "
        "batch at once.",
    )
    threads: int = _doc(0, "Torch CPU threads (0: torch's default).")


@dataclass(frozen=True)
class DMCConfig:
    image: bool = _doc(True, "Give the model 64x64 camera images.")
    proprio: bool = _doc(True, "Give the model proprioceptive vectors.")
    camera: int = _doc(-1, "Camera id (-1: the suite's default for the domain).")
    distractor: str = _doc(
        "none",
        "Visual distractor in training envs: 'none', 'color' (a random background "
        "colour per episode) or 'noise' (moving noise behind the scene).",
    )
    eval_distractor: str = _doc("none", "Visual distractor in evaluation envs (same choices).")
    fast_render: bool = _doc(
        False,
        "Render without shadows and reflections: several times faster on a CPU; objects cast no "
        "shadow and the floor mirrors nothing (docs/performance.md shows both).",
    )


@dataclass(frozen=True)
class AtariConfig:
    size: tuple[int, ...] = _doc((96, 96), "Frame size.")
    repeat: int = _doc(4, "Action repeat.")
    sticky: bool = _doc(True, "Sticky actions (repeat previous action with p=0.25).")
    gray: bool = _doc(True, "Grayscale frames.")
    noops: int = _doc(30, "Max random no-ops at reset.")
    actions: str = _doc("all", "Action set: 'all' (the full 18) or 'needed' (the game's minimal set).")


@dataclass(frozen=True)
class EnvConfig:
    size: tuple[int, ...] = _doc((64, 64), "Image observations are resized to this (H, W).")
    pixels: bool = _doc(False, "Use the env's rgb render as the observation instead of its state.")
    repeat: int = _doc(1, "Action repeat: each agent step runs the env this many times.")
    action_noise: float = _doc(
        0.0,
        "Make the task stochastic (training and evaluation envs alike): continuous actions get "
        "Gaussian noise of this std (in [-1, 1] units, clipped); a discrete action is replaced "
        "by a uniformly random one with this probability. Seeded by each episode's seed, so a "
        "resumed run replays its envs exactly (docs/compare.md).",
    )
    sticky: float = _doc(
        0.0,
        "Sticky actions for any env but Atari (which has env.atari.sticky): with this "
        "probability the previous action is repeated instead of the one chosen.",
    )
    dmc: DMCConfig = _sub(DMCConfig, "DeepMind Control suite settings.")
    atari: AtariConfig = _sub(AtariConfig, "Atari settings.")


@dataclass(frozen=True)
class Config:
    task: str = _doc("", "Environment id: a gymnasium id, 'module:Env-v0', or a suite id.")
    seed: int = _doc(0, "Seed for weights, sampling and training env seeds.")
    batch_size: int = _doc(16, "Sequences per training batch.")
    batch_length: int = _doc(64, "Steps per training sequence.")
    presets: tuple[str, ...] = _doc((), "Presets applied, in order (recorded for the reader).")
    replay: ReplayConfig = _sub(ReplayConfig, "Replay buffer.")
    run: RunConfig = _sub(RunConfig, "Training loop.")
    offline: OfflineConfig = _sub(OfflineConfig, "Learning from a dataset before (or instead of) env steps.")
    compute: ComputeConfig = _sub(ComputeConfig, "Device, precision, compiled kernels, threads.")
    env: EnvConfig = _sub(EnvConfig, "Environment construction.")
    agent: AgentConfig = _sub(AgentConfig, "The agent.")


# --------------------------------------------------------------------------- checks


def _check(ok: bool, path: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{path}: {value!r} is out of range; allowed: {allowed}")


def check_mpc(mpc: MPCConfig, path: str = "agent.mpc") -> None:
    """Raise ConfigError for planner settings no planner could use."""
    _check(
        mpc.optimiser in MPC_OPTIMISERS,
        f"{path}.optimiser",
        " or ".join(map(repr, MPC_OPTIMISERS)),
        mpc.optimiser,
    )
    _check(mpc.horizon >= 1, f"{path}.horizon", "1 or more", mpc.horizon)
    _check(mpc.samples >= 1, f"{path}.samples", "1 or more", mpc.samples)
    _check(mpc.iterations >= 0, f"{path}.iterations", "0 or more", mpc.iterations)
    _check(
        1 <= mpc.elites <= mpc.samples, f"{path}.elites", f"between 1 and samples ({mpc.samples})", mpc.elites
    )
    _check(
        0 <= mpc.policy_samples <= mpc.samples,
        f"{path}.policy_samples",
        f"between 0 and samples ({mpc.samples})",
        mpc.policy_samples,
    )
    _check(
        0 < mpc.min_std <= mpc.max_std,
        f"{path}.min_std",
        f"above 0 and at most max_std ({mpc.max_std})",
        mpc.min_std,
    )


def _check_schedule(value: str, path: str) -> None:
    _check(value in SCHEDULES, path, " or ".join(map(repr, SCHEDULES)), value)


def _check_ent_coef(value: str, path: str) -> None:
    """SB3's SAC takes a number, 'auto', or 'auto_<initial value>'."""
    number = value[len("auto_") :] if value.startswith("auto_") else value
    ok = value == "auto"
    if not ok:
        try:
            ok = float(number) > 0
        except ValueError:
            ok = False
    _check(ok, path, "a positive number, 'auto' or 'auto_<initial value>'", value)


def check_baseline(b: BaselineConfig, path: str = "agent.baseline") -> None:
    """Raise ConfigError for baseline hyperparameters SB3 would refuse or misread."""
    _check(b.frame_stack >= 1, f"{path}.frame_stack", "1 or more", b.frame_stack)
    for name, algo in (("ppo", b.ppo), ("sac", b.sac), ("dqn", b.dqn)):
        where = f"{path}.{name}"
        _check(algo.learning_rate > 0, f"{where}.learning_rate", "a positive number", algo.learning_rate)
        _check_schedule(algo.lr_schedule, f"{where}.lr_schedule")
        _check(0 < algo.gamma <= 1, f"{where}.gamma", "0 < value <= 1", algo.gamma)
        _check(all(w > 0 for w in algo.net_arch), f"{where}.net_arch", "positive widths", algo.net_arch)
    for name, off in (("sac", b.sac), ("dqn", b.dqn)):
        where = f"{path}.{name}"
        _check(off.buffer_size >= 1, f"{where}.buffer_size", "1 or more", off.buffer_size)
        _check(off.learning_starts >= 0, f"{where}.learning_starts", "0 or more", off.learning_starts)
        _check(0 < off.tau <= 1, f"{where}.tau", "0 < value <= 1", off.tau)
        _check(off.train_freq >= 1, f"{where}.train_freq", "1 or more", off.train_freq)
        _check(
            off.gradient_steps >= 1 or off.gradient_steps == -1,
            f"{where}.gradient_steps",
            "1 or more, or -1",
            off.gradient_steps,
        )
        _check(
            off.target_update_interval >= 1,
            f"{where}.target_update_interval",
            "1 or more",
            off.target_update_interval,
        )
    ppo = b.ppo
    _check(ppo.n_steps * b.envs > 1, f"{path}.ppo.n_steps", "n_steps x envs above 1", ppo.n_steps)
    _check(ppo.n_epochs >= 1, f"{path}.ppo.n_epochs", "1 or more", ppo.n_epochs)
    _check(0 <= ppo.gae_lambda <= 1, f"{path}.ppo.gae_lambda", "0 <= value <= 1", ppo.gae_lambda)
    _check(ppo.clip_range > 0, f"{path}.ppo.clip_range", "a positive number", ppo.clip_range)
    _check_schedule(ppo.clip_schedule, f"{path}.ppo.clip_schedule")
    _check(ppo.sde_sample_freq >= -1, f"{path}.ppo.sde_sample_freq", "-1 or more", ppo.sde_sample_freq)
    _check(b.sac.sde_sample_freq >= -1, f"{path}.sac.sde_sample_freq", "-1 or more", b.sac.sde_sample_freq)
    _check_ent_coef(b.sac.ent_coef, f"{path}.sac.ent_coef")
    dqn = b.dqn
    for name in ("exploration_fraction", "exploration_initial_eps", "exploration_final_eps"):
        value = getattr(dqn, name)
        _check(0 <= value <= 1, f"{path}.dqn.{name}", "0 <= value <= 1", value)


def validate(config: Config) -> Config:
    """Raise ConfigError for values no run could use; return the config unchanged."""
    flat = flatten(config)
    positive = [
        p
        for p, t in leaf_paths(Config).items()
        if t is int
        and p.rsplit(".", 1)[-1]
        in (
            "deter",
            "hidden",
            "stoch",
            "classes",
            "blocks",
            "depth",
            "units",
            "kernel",
            "bins",
            "batch_size",
            "batch_length",
            "envs",
            "eval_envs",
            "chunksize",
            "size",
            "imag_length",
            "horizon",
            "every",
            "keep_checkpoints",
        )
    ]
    for path in positive:
        _check(flat[path] > 0, path, "a positive integer", flat[path])
    for path in ("agent.dyn.rssm.unimix", "agent.policy.unimix"):
        _check(0 <= flat[path] < 1, path, "0 <= value < 1", flat[path])
    for path in ("agent.imag_loss.lam", "agent.repl_loss.lam"):
        _check(0 <= flat[path] <= 1, path, "0 <= value <= 1", flat[path])
    for path in ("agent.slowvalue.rate", "agent.retnorm.rate"):
        _check(0 < flat[path] <= 1, path, "0 < value <= 1", flat[path])
    for path in leaf_paths(Config):
        if path.startswith("agent.loss_scales."):
            _check(flat[path] >= 0, path, "a non-negative number", flat[path])
    rssm = config.agent.dyn.rssm
    _check(
        rssm.deter % rssm.blocks == 0,
        "agent.dyn.rssm.deter",
        f"a multiple of agent.dyn.rssm.blocks ({rssm.blocks})",
        rssm.deter,
    )
    dec = config.agent.dec.simple
    _check(
        rssm.deter % dec.bspace == 0,
        "agent.dec.simple.bspace",
        f"a divisor of agent.dyn.rssm.deter ({rssm.deter})",
        dec.bspace,
    )
    _check(
        config.agent.loss_scales.con > 0,
        "agent.loss_scales.con",
        "a positive number: without a continue head imagined episodes never end",
        0,
    )
    _check(config.run.train_ratio > 0, "run.train_ratio", "a positive number", config.run.train_ratio)
    _check(config.run.steps > 0, "run.steps", "a positive integer", config.run.steps)
    _check(config.run.eval_eps >= 0, "run.eval_eps", "0 or more", config.run.eval_eps)
    _check(config.run.eval_every >= 0, "run.eval_every", "0 or more", config.run.eval_every)
    _check(config.run.updates >= 0, "run.updates", "0 or more", config.run.updates)
    _check(config.offline.eval_every >= 0, "offline.eval_every", "0 or more", config.offline.eval_every)
    _check(config.run.eval_max_steps >= 0, "run.eval_max_steps", "0 or more", config.run.eval_max_steps)
    _check(config.compute.threads >= 0, "compute.threads", "0 or more", config.compute.threads)
    _check(config.compute.codec_chunk >= 0, "compute.codec_chunk", "0 or more", config.compute.codec_chunk)
    _check(config.run.release_every >= 0, "run.release_every", "0 or more", config.run.release_every)
    _check(
        config.compute.precision in PRECISIONS,
        "compute.precision",
        " or ".join(PRECISIONS),
        config.compute.precision,
    )
    _check(config.run.skip_limit >= 1, "run.skip_limit", "1 or more", config.run.skip_limit)
    _check(config.run.env_timeout >= 0, "run.env_timeout", "0 or more", config.run.env_timeout)
    _check(config.run.env_crash_loop >= 1, "run.env_crash_loop", "1 or more", config.run.env_crash_loop)
    _check(config.run.env_crash_steps >= 1, "run.env_crash_steps", "1 or more", config.run.env_crash_steps)
    rate = config.run.env_failure_rate
    _check(0 <= rate < 1, "run.env_failure_rate", "0 <= value < 1", rate)
    window = config.run.env_failure_window
    _check(window >= 1, "run.env_failure_window", "1 or more", window)
    _check(
        config.run.env_workers in ("process", "inline"),
        "run.env_workers",
        "'process' or 'inline'",
        config.run.env_workers,
    )
    _check(config.env.repeat >= 1, "env.repeat", "1 or more", config.env.repeat)
    _check(config.env.action_noise >= 0, "env.action_noise", "0 or more", config.env.action_noise)
    _check(0 <= config.env.sticky < 1, "env.sticky", "0 <= value < 1", config.env.sticky)
    _check(
        not (config.task.startswith("atari:") and config.env.sticky > 0),
        "env.sticky",
        "0 for Atari, whose sticky actions are env.atari.sticky",
        config.env.sticky,
    )
    for path in ("env.dmc.distractor", "env.dmc.eval_distractor"):
        _check(get(config, path) in DISTRACTORS, path, ", ".join(map(repr, DISTRACTORS)), get(config, path))
    _check(len(config.env.size) == 2, "env.size", "two integers (H, W)", config.env.size)
    for path in ("env.size",):
        h, w = get(config, path)
        _check(
            h % 16 == 0 and w % 16 == 0 and h >= 48 and w >= 48,
            path,
            "H and W multiples of 16, at least 48 (four 2x stages)",
            (h, w),
        )
    from dreamrl.agents import TRAINERS
    from dreamrl.world_models import WORLD_MODELS

    _check(config.agent.kind in TRAINERS, "agent.kind", ", ".join(map(repr, TRAINERS)), config.agent.kind)

    _check(config.agent.wm in WORLD_MODELS, "agent.wm", ", ".join(map(repr, WORLD_MODELS)), config.agent.wm)

    _check(config.agent.act in ACT_MODES, "agent.act", " or ".join(map(repr, ACT_MODES)), config.agent.act)
    _check(
        config.agent.ac_data in AC_DATA,
        "agent.ac_data",
        " or ".join(map(repr, AC_DATA)),
        config.agent.ac_data,
    )
    check_mpc(config.agent.mpc)
    check_baseline(config.agent.baseline)
    _check(config.agent.pixel.frames >= 1, "agent.pixel.frames", "1 or more", config.agent.pixel.frames)
    _check(config.agent.pixel.layers >= 0, "agent.pixel.layers", "0 or more", config.agent.pixel.layers)
    _check(
        config.agent.decoderfree.offdiag >= 0,
        "agent.decoderfree.offdiag",
        "0 or more",
        config.agent.decoderfree.offdiag,
    )
    _check(
        config.agent.decoderfree.scale >= 0,
        "agent.decoderfree.scale",
        "0 or more",
        config.agent.decoderfree.scale,
    )
    _check(config.agent.dyn.typ == "rssm", "agent.dyn.typ", "'rssm'", config.agent.dyn.typ)
    _check(config.agent.enc.typ == "simple", "agent.enc.typ", "'simple'", config.agent.enc.typ)
    _check(config.agent.dec.typ == "simple", "agent.dec.typ", "'simple'", config.agent.dec.typ)
    for path in ("agent.enc.spaces", "agent.dec.spaces"):
        try:
            re.compile(get(config, path))
        except re.error as e:
            raise ConfigError(f"{path}: {get(config, path)!r} is not a regular expression ({e})") from None
    _check(
        len(config.agent.enc.simple.mults) == len(config.agent.dec.simple.mults),
        "agent.dec.simple.mults",
        "as many stages as agent.enc.simple.mults",
        config.agent.dec.simple.mults,
    )
    return config


def warnings_for(config: Config) -> list[str]:
    """Settings that run but that the lesson's common mistakes warn against (each preset of
    :data:`dreamrl.presets.MISTAKES` sets one; docs/compare.md says what each predicts), and,
    for a model-free baseline, settings under which ``run.steps`` leaves it almost no learning."""
    from dreamrl.agents import learns_world_model

    if learns_world_model(config.agent.kind):
        out = _behaviour_warnings(config.agent) + _kl_warnings(config.agent.loss_scales)
        if config.batch_length < 16:
            out.append(f"batch_length={config.batch_length}: short sequences starve the GRU of context.")
    else:
        out = _baseline_warnings(config)
    dmc = config.env.dmc
    if dmc.eval_distractor != dmc.distractor:
        where = (
            "" if config.task.startswith("dmc:") else f" (no effect on {config.task or 'a task'}: not DMC)"
        )
        out.append(
            f"env.dmc.eval_distractor={dmc.eval_distractor!r} differs from env.dmc.distractor="
            f"{dmc.distractor!r}: evaluation measures transfer to visuals training never saw{where}."
        )
    return out


def _baseline_warnings(config: Config) -> list[str]:
    """Model-free settings under which a run of ``run.steps`` barely learns: SB3's defaults
    were made for runs of a million steps, and a short comparison can fall under them."""
    b, steps, out = config.agent.baseline, config.run.steps, []
    if config.agent.kind == "ppo":
        rollout = b.ppo.n_steps * b.envs
        if steps // rollout < 3:
            out.append(
                f"agent.baseline.ppo.n_steps={b.ppo.n_steps} x {b.envs} env(s): PPO learns once every "
                f"{rollout:,} env steps, so {steps // rollout} time(s) in run.steps={steps:,}."
            )
    if (
        config.agent.kind in ("sac", "dqn")
        and (starts := getattr(b, config.agent.kind).learning_starts) >= steps
    ):
        out.append(
            f"agent.baseline.{config.agent.kind}.learning_starts={starts:,} is not under "
            f"run.steps={steps:,}: the run ends before its first update."
        )
    if config.agent.kind == "dqn" and b.dqn.target_update_interval >= steps:
        out.append(
            f"agent.baseline.dqn.target_update_interval={b.dqn.target_update_interval:,} is not under "
            f"run.steps={steps:,}: the target network is never updated, so every Q-target comes "
            "from the initial network."
        )
    return out


def _behaviour_warnings(agent: AgentConfig) -> list[str]:
    out = []
    if agent.ac_data == "replay":
        out.append(
            "agent.ac_data=replay: the actor-critic learns on replayed real states only, with no "
            "imagination; the lesson predicts it loses the sample efficiency imagination brings."
        )
    if agent.imag_length >= 50:
        out.append(
            f"agent.imag_length={agent.imag_length}: a long imagination horizon lets the "
            "actor exploit compounding model error (the paper uses 15)."
        )
    if agent.imag_length < 5:
        out.append(f"agent.imag_length={agent.imag_length}: very short imagination horizon.")
    if not agent.imag_continue:
        out.append(
            "agent.imag_continue=false: imagined episodes never end (the continue head is trained "
            "but not read); the actor learns the returns of episodes that cannot stop."
        )
    return out


def _kl_warnings(scales: LossScales) -> list[str]:
    paper = LossScales()
    if scales.dyn == 0 or scales.rep == 0:
        return ["KL balance has a zero term: the latents may collapse or ignore observations."]
    if scales.rep / scales.dyn > 1.0:
        return [
            f"agent.loss_scales.rep/dyn = {scales.rep / scales.dyn:g}: a strong representation "
            "KL pushes the posterior to ignore observations (the paper uses 0.1)."
        ]
    if scales.rep / scales.dyn < 0.01:
        return [
            f"agent.loss_scales.rep/dyn = {scales.rep / scales.dyn:g}: a weak representation "
            "KL leaves latents hard to predict (the paper uses 0.1)."
        ]
    both = (
        f"agent.loss_scales.dyn={scales.dyn:g} and rep={scales.rep:g} "
        f"(the paper's {paper.dyn:g} and {paper.rep:g})"
    )
    if scales.dyn <= 0.1 * paper.dyn:
        return [f"{both}: KL regularisation this weak gives poor latents the dynamics cannot predict."]
    if scales.dyn >= 5 * paper.dyn:
        return [f"{both}: KL regularisation this strong lets the dynamics ignore observations."]
    return []


def apply_presets(config: Config, names: Sequence[str]) -> Config:
    """Apply named presets left to right and record their names."""
    from dreamrl import presets as preset_table

    for name in names:
        if name not in preset_table.PRESETS:
            known = ", ".join(sorted(preset_table.PRESETS))
            raise ConfigError(f"--preset {name}: unknown preset; known: {known}")
        config = replace(config, preset_table.PRESETS[name])
    return dataclasses.replace(config, presets=tuple(config.presets) + tuple(names))


# --------------------------------------------------------------------------- building


def field_docs() -> dict[str, str]:
    """The documentation string of every config field, by dotted path."""
    return _field_docs(Config)


def _migrate(data: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config's nested dict with every key of :data:`MOVED` under its new path
    and those of :data:`REMOVED` left out."""
    out = json.loads(json.dumps(data))
    for gone in REMOVED:
        *parents, leaf = gone.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    for old, new in MOVED.items():
        *parents, leaf = old.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        if leaf not in node:
            continue
        value = node.pop(leaf)
        *new_parents, new_leaf = new.split(".")
        target = out
        for part in new_parents:
            target = target.setdefault(part, {})
        target[new_leaf] = value
    return out


def from_dict(data: Mapping[str, Any]) -> Config:
    """Rebuild a config from :func:`to_dict` output (a saved ``config.json``, also one
    written before a key moved)."""
    return validate(from_nested(Config, _migrate(data)))


# Agent kinds whose world model the size presets (size1m ... size400m) size: the others
# get no size preset put first when none is named.
SIZED_KINDS = ("dreamer",)


def sets_model_size(presets: Sequence[str], overrides: Mapping[str, Any]) -> bool:
    """Whether the presets or overrides choose the model's size (its RSSM width)."""
    from dreamrl import presets as preset_table

    size_key = "agent.dyn.rssm.deter"
    tables = [preset_table.PRESETS[p] for p in presets if p in preset_table.PRESETS]
    return any(size_key in t for t in tables) or size_key in overrides


def hardware_size(device: str) -> str:
    """The size preset for a device when none is named: the paper's 200M on a GPU,
    1M on a CPU, where 200M would take days."""
    from dreamrl.devices import resolve_device

    return "size200m" if resolve_device(device).type == "cuda" else "size1m"


def build_config(
    presets: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    base: Config | None = None,
    size: str | None = "auto",
) -> Config:
    """Compose ``base`` (default: the paper's config), the task's defaults, presets in
    order, then overrides.

    The task's defaults (:func:`dreamrl.presets.task_defaults`: RL Zoo's tuned
    hyperparameters of a baseline for its task) sit under the presets and overrides, so
    anything named wins over them. ``size="auto"`` puts :func:`hardware_size`'s preset
    first when nothing named chooses the model size of an agent that has one
    (:data:`SIZED_KINDS`); ``size=None`` leaves the base's (the paper's 200M)."""
    from dreamrl.presets import task_defaults

    overrides = dict(overrides or {})
    for key in overrides:
        if key in MOVED:
            raise ConfigError(f"{key}: this key is now {MOVED[key]}")
        if key in REMOVED:
            raise ConfigError(f"{key}: no longer a setting ({REMOVED[key]})")
    presets = list(presets)
    start = base or Config()
    named = replace(apply_presets(start, presets), overrides)  # what was asked for: its task and kind
    sized = named.agent.kind in SIZED_KINDS
    if size == "auto" and base is None and sized and not sets_model_size(presets, overrides):
        presets = [hardware_size(str(overrides.get("compute.device", "auto"))), *presets]
    defaults = task_defaults(named)
    config = apply_presets(replace(start, defaults) if defaults else start, presets)
    config = replace(config, overrides)
    return validate(config)
