"""Named presets: ``{dotted.path or regex: value}`` tables applied left to right.

The size ladder and the domain presets are the official DreamerV3 ones (its
``configs.yaml``); keys that are regexes (``.*\\.units``) set every field they fully
match, as the official presets do. ``debug`` and ``demo`` are dreamrl's own; ``ppo``,
``sac`` and ``dqn`` choose a model-free baseline, whose tuned settings for a task come from
:func:`task_defaults`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dreamrl.config import Config

Preset = dict[str, Any]


def _size(deter: int, hidden: int, classes: int, depth: int, units: int) -> Preset:
    """One rung of the paper's size ladder: RSSM dims, CNN depth and MLP units."""
    return {
        "agent.dyn.rssm.deter": deter,
        "agent.dyn.rssm.hidden": hidden,
        "agent.dyn.rssm.classes": classes,
        r"agent\..*\.depth": depth,
        r"agent\..*\.units": units,
    }


SIZES: dict[str, Preset] = {
    "size1m": _size(512, 64, 4, 4, 64),
    "size12m": _size(2048, 256, 16, 16, 256),
    "size25m": _size(3072, 384, 24, 24, 384),
    "size50m": _size(4096, 512, 32, 32, 512),
    "size100m": _size(6144, 768, 48, 48, 768),
    "size200m": _size(8192, 1024, 64, 64, 1024),
    "size400m": _size(12288, 1536, 96, 96, 1536),
}


DOMAINS: dict[str, Preset] = {
    "dmc_vision": {
        "env.dmc.proprio": False,
        "run.steps": 1_100_000,
        "run.train_ratio": 256,
    },
    "dmc_proprio": {
        **SIZES["size1m"],
        "env.dmc.image": False,
        "run.steps": 1_100_000,
        "run.train_ratio": 1024,
    },
    "atari": {"run.steps": 51_000_000, "run.train_ratio": 32},
    "atari100k": {
        "env.atari.size": (64, 64),
        "env.atari.sticky": False,
        "env.atari.gray": False,
        "env.atari.actions": "needed",
        "run.steps": 110_000,
        "run.envs": 1,
        "run.train_ratio": 256,
    },
    "crafter": {"run.steps": 1_100_000, "run.envs": 1, "run.train_ratio": 512},
}


OWN: dict[str, Preset] = {
    # A tiny model for smoke tests and first contact: 1,500 env steps of training take
    # well under a minute on a 2-core CPU. It does not learn much; it runs every path.
    # Nothing is compiled: seconds of compiling would outweigh its whole run.
    "debug": {
        "batch_size": 8,
        "batch_length": 16,
        "agent.dyn.rssm.deter": 64,
        "agent.dyn.rssm.hidden": 32,
        "agent.dyn.rssm.stoch": 8,
        "agent.dyn.rssm.classes": 4,
        "agent.dyn.rssm.blocks": 4,
        r"agent\..*\.depth": 4,
        r"agent\..*\.units": 32,
        r"agent\..*\.bins": 255,
        r"agent\..*\.layers": 1,
        "agent.dec.simple.bspace": 4,
        "replay.size": 100_000,
        "replay.chunksize": 256,
        "run.steps": 1_500,
        "run.envs": 2,
        "run.env_workers": "inline",
        "run.train_ratio": 32,
        "run.eval_every": 1_000,
        "run.eval_eps": 2,
        "run.eval_envs": 2,
        "run.log_every": 5,
        "run.save_every": 30,
        "compute.compile": False,
    },
    # For runs of a few thousand updates (a CPU, classic control): the paper's learning
    # rate of 4e-5 needs tens of thousands of updates to move a zero-initialised reward
    # head; 3e-4 learns CartPole-v1 in a few thousand env steps (see docs/learning.md).
    "quick": {
        "agent.opt.lr": 3e-4,
    },
    # What `make demo` runs: the smallest setting measured to learn CartPole-v1 in minutes
    # on a 2-core CPU (docs/learning.md): the size1m model; the quick learning rate, since
    # the paper's 4e-5 needs tens of thousands of updates; sequences of 16 steps, which
    # cost 0.37 s an update where 16x32 cost 0.62 s, at train ratio 128 (one update every
    # two env steps); 2,500 env steps. Nothing is compiled: at this size compiling gained
    # nothing here and its first minutes would be most of the run.
    "demo": {
        **SIZES["size1m"],
        "agent.opt.lr": 3e-4,
        "batch_length": 16,
        "run.steps": 2_500,
        "run.envs": 1,
        "run.env_workers": "inline",
        "run.train_ratio": 128,
        "run.eval_every": 500,
        "run.eval_eps": 5,
        "run.log_every": 10,
        "run.save_every": 60,
        "compute.compile": False,
    },
}


# The world models of the lesson's first table (docs/world_models.md), one preset each, to
# stack on a size and a domain: `--preset demo wm_pixel`.
WORLD_MODELS: dict[str, Preset] = {
    "wm_rssm": {"agent.wm": "rssm"},
    # R2-Dreamer: no decoder; redundancy reduction with the official coefficients.
    "wm_decoderfree": {"agent.wm": "decoderfree"},
    # Imagining a step of the pixel predictor decodes and re-encodes a frame: from every
    # replayed step (16x16 starts x 15 steps) that is 15 times the model's own training
    # cost per update; from the last 4 steps of each sequence, under 4 times.
    "wm_pixel": {"agent.wm": "pixel", "agent.imag_last": 4},
}


# Ways of acting (docs/planning.md): the imagination actor is the default.
ACTING: dict[str, Preset] = {
    # Act by TD-MPC2's MPPI in the world model (shooting over actor sequences when discrete).
    "mpc": {"agent.act": "mpc"},
    # PlaNet's CEM: 12 steps, 10 iterations, 1,000 candidates, top 100, rewards only.
    "mpc_cem": {
        "agent.act": "mpc",
        "agent.mpc.optimiser": "cem",
        "agent.mpc.horizon": 12,
        "agent.mpc.iterations": 10,
        "agent.mpc.samples": 1000,
        "agent.mpc.elites": 100,
        "agent.mpc.min_std": 1e-3,
        "agent.mpc.max_std": 1.0,
        "agent.mpc.policy_samples": 0,
        "agent.mpc.warm_start": False,
    },
}


# The lesson's common mistakes (docs/compare.md), one knob each, to run against the default:
# `dreamrl compare --agents dreamer,actor_real,horizon50,...`. `dreamrl train` warns about
# each at start (dreamrl.config.warnings_for). The KL pair scales both KL terms of the
# paper's (dyn 1.0, rep 0.1) by 0.01 and by 10.
MISTAKES: dict[str, Preset] = {
    # The actor-critic learns on the replayed real sequences only: no imagination.
    "actor_real": {"agent.ac_data": "replay"},
    # Huge H with weak dynamics: "the actor learns fantasy" (see the fantasy gap).
    "horizon50": {"agent.imag_length": 50},
    "horizon100": {"agent.imag_length": 100},
    # Skipping the continue head: imagined episodes never end.
    "no_continue": {"agent.imag_continue": False},
    # KL too weak ("poor latents") and too strong ("dynamics ignore observations").
    "kl_weak": {"agent.loss_scales.dyn": 0.01, "agent.loss_scales.rep": 0.001},
    "kl_strong": {"agent.loss_scales.dyn": 10.0, "agent.loss_scales.rep": 1.0},
    # Evaluating on the training env only is the default's mistake; this preset is its fix,
    # evaluating DMC agents against moving-noise backgrounds training never showed.
    "eval_distractors": {"env.dmc.eval_distractor": "noise"},
}


# The model-free baselines of stable-baselines3 (docs/baselines.md), trained through the
# same envs and evaluated as a Dreamer run is: PPO for any action space, SAC for continuous
# and DQN for discrete ones. Their hyperparameters are SB3's defaults, or RL Zoo's tuned ones
# for the task where it has some (task_defaults). They have no world model to diagnose.
BASELINES: dict[str, Preset] = {
    "ppo": {"agent.kind": "ppo", "run.diagnose": False},
    "sac": {"agent.kind": "sac", "run.diagnose": False},
    "dqn": {"agent.kind": "dqn", "run.diagnose": False},
}


PRESETS: dict[str, Preset] = {**SIZES, **DOMAINS, **OWN, **WORLD_MODELS, **ACTING, **MISTAKES, **BASELINES}


def task_defaults(config: Config) -> Preset:
    """Settings the agent ``config`` names takes on its task unless a preset or override
    says otherwise: RL Zoo's tuned hyperparameters of a baseline, where the Zoo has some for
    the task and its observations (``agent.baseline.zoo``; :mod:`dreamrl.baselines.zoo`)."""
    if not config.agent.baseline.zoo:
        return {}
    from dreamrl.baselines.zoo import tuned

    return tuned(config.agent.kind, config.task, pixels=config.env.pixels)


# What `--preset demo` was measured to do, said to a user who named no preset.
DEMO_RESULT = (
    "learns CartPole-v1 to a return of 500 in 2,500 env steps, 8 minutes of training on a "
    "2-core CPU (docs/learning.md)"
)

SIZE_NAMES = tuple(SIZES)
