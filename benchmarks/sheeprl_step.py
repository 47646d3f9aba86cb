"""Time one train step of sheeprl's DreamerV3 and count its FLOPs; runs inside sheeprl's own virtualenv.

    <sheeprl-venv>/bin/python benchmarks/sheeprl_step.py [--algo dreamer_v3_XS] [--batch 16] [--length 64]
        [--threads 2] [--steps 3] [--warmup 2] [--allocator default|tuned|jemalloc] [--peak]
        [--override KEY=VALUE ...]

``benchmarks/sheeprl_side_by_side.py`` runs this script under the python of a separate virtualenv that
has sheeprl (from PyPI) installed; sheeprl is never a dependency of dreamrl, and nothing of it is copied
here: the script imports the installed package and calls its own functions.

The agent is built as ``sheeprl exp=dreamer_v3 algo=<algo> env=gym env.id=CartPole-v1
algo.cnn_keys.encoder=[rgb] algo.mlp_keys.encoder=[]`` would build it (with ``--vectors``,
``algo.cnn_keys.encoder=[] algo.mlp_keys.encoder=[state]``): Hydra's compose API on sheeprl's
packaged configs, the torch settings and the Fabric of ``sheeprl.cli.run_algorithm`` (CPU, one device,
32-bit), then what ``sheeprl.algos.dreamer_v3.dreamer_v3.main`` does before its loop: the env (through
sheeprl's ``make_env``, for its observation and action spaces: one 64x64 RGB key, ``rgb``, channels
first, and a discrete action space), ``build_agent``, the three optimizers of the config set up by Fabric,
``Moments``, the metric aggregator, and a replay buffer. The batch is sampled from that buffer, filled
with random steps laid out as main() adds them, by sheeprl's own ``sample_batches``: a dict of float32
tensors, time-major ``[T, B, ...]``, images ``[T, B, 3, 64, 64]`` in 0..255, one-hot actions. One timed
step is what main() runs per gradient step: the target critic's update, then ``train(...)`` (one
world-model update, then one actor and one critic update on imagined trajectories).

With ``--exp dreamer_v3_5 --algo dreamer_v3_5_<size>`` (1M, 12M, ...: the official sizes) it builds
sheeprl's port of the Nature paper's DreamerV3 instead, as that algorithm's main() does (one optimizer
for the three models), and hands its ``train`` a batch laid out as its replay buffer gives one: the
sequence plus the replay-context step before it, with that step's latent state.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one whole step, exactly as
``dreamrl.run.bench.bench`` counts dreamrl's train step: the counter sees the matrix products and
convolutions (forward and backward) at the dispatcher, whatever code issued them, so the two figures
are counted the same way and their GFLOP/s compare. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", default="dreamer_v3_XS", help="sheeprl algo config (a dreamer_v3 size preset)")
    p.add_argument("--exp", default="dreamer_v3", help="sheeprl exp config")
    p.add_argument("--env-id", default="CartPole-v1", help="gymnasium id, observed through its rgb render")
    p.add_argument("--batch", type=int, default=16, help="sequences per batch (algo.per_rank_batch_size)")
    p.add_argument("--length", type=int, default=64, help="steps per sequence (per_rank_sequence_length)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (and OMP_NUM_THREADS)")
    p.add_argument("--steps", type=int, default=3, help="train steps to time (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed train steps first")
    p.add_argument(
        "--allocator",
        choices=["default", "tuned", "jemalloc"],
        default="default",
        help="tuned: glibc's mmap threshold at its maximum and no trimming (as dreamrl sets them without "
        "jemalloc); jemalloc: check that the caller preloaded it (LD_PRELOAD), as dreamrl's CLI runs",
    )
    p.add_argument(
        "--vectors",
        action="store_true",
        help="observe the env's state vector (key 'state') instead of its render",
    )
    p.add_argument("--peak", action="store_true", help="also measure a 2048x2048 float32 matmul's GFLOP/s")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override, KEY=VALUE")
    return p.parse_args(argv)


def tune_allocator() -> bool:
    """Keep freed tensor buffers in glibc's heap: the same two mallopt calls as dreamrl's CLI makes."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) & mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def compose_config(args: argparse.Namespace) -> Any:
    """sheeprl's config as its CLI composes, resolves and checks it (``sheeprl.cli.run``)."""
    from hydra import compose, initialize_config_module
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf
    from sheeprl.cli import check_configs
    from sheeprl.utils.utils import dotdict

    overrides = [
        f"exp={args.exp}",
        f"algo={args.algo}",
        "env=gym",
        f"env.id={args.env_id}",
        *(
            ["algo.cnn_keys.encoder=[]", "algo.mlp_keys.encoder=[state]"]
            if args.vectors
            else ["algo.cnn_keys.encoder=[rgb]", "algo.mlp_keys.encoder=[]"]
        ),
        f"algo.per_rank_batch_size={args.batch}",
        f"algo.per_rank_sequence_length={args.length}",
        f"num_threads={args.threads}",
        "fabric.accelerator=cpu",
        "fabric.devices=1",
        "fabric.num_nodes=1",
        *args.override,
    ]
    setup_globals()  # the `now` resolver of the run name, as `hydra.main` registers it
    with initialize_config_module(config_module="sheeprl.configs", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    cfg = dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    check_configs(cfg)
    if cfg.algo.name not in ("dreamer_v3", "dreamer_v3_5"):
        raise SystemExit(
            f"--algo {args.algo} is a {cfg.algo.name} config, not a dreamer_v3 or dreamer_v3_5 one"
        )
    return cfg


def make_fabric(cfg: Any) -> Any:
    """The torch settings and the Fabric of ``sheeprl.cli.run_algorithm``, metrics set up as it does."""
    import hydra
    import torch
    from sheeprl.algos.dreamer_v3 import utils as dv3_utils
    from sheeprl.utils.metric import MetricAggregator
    from sheeprl.utils.timer import timer
    from torch.distributions import Distribution

    os.environ["OMP_NUM_THREADS"] = str(cfg.num_threads)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    Distribution.set_default_validate_args(cfg.distribution.validate_args)
    fabric = hydra.utils.instantiate(cfg.fabric, strategy=cfg.fabric.get("strategy", "auto"), _convert_="all")
    timer.disabled = cfg.metric.log_level == 0 or cfg.metric.disable_timer
    for key in set(cfg.metric.aggregator.metrics.keys()) - dv3_utils.AGGREGATOR_KEYS:
        cfg.metric.aggregator.metrics.pop(key, None)
    MetricAggregator.disabled = cfg.metric.log_level == 0 or len(cfg.metric.aggregator.metrics) == 0
    return fabric


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``size`` x ``size`` float32 matrix product, the best of ``repeats`` (as dreamrl bench)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def random_batch(
    fabric: Any,
    cfg: Any,
    obs_keys: list[str],
    obs_space: Any,
    actions_dim: Sequence[int],
    is_continuous: bool,
) -> dict:
    """A batch as main() passes it to ``train``: sampled by ``sample_batches`` from a buffer of random steps.

    The steps carry main()'s keys and per-step layout (``[1, num_envs, ...]``: observations as the env
    gives them, one-hot discrete actions or continuous ones in [-1, 1], rewards, terminated, truncated,
    is_first); each env's buffer holds two
    sequences. The buffer lives in memory (main() memory-maps it in the log dir): the batch is the same.
    """
    import numpy as np
    from sheeprl.algos.dreamer_v2.utils import sample_batches
    from sheeprl.data.buffers import EnvIndependentReplayBuffer, SequentialReplayBuffer

    rng = np.random.default_rng(cfg.seed)
    n_envs, steps = cfg.env.num_envs, 2 * cfg.algo.per_rank_sequence_length
    rb = EnvIndependentReplayBuffer(
        steps, n_envs=n_envs, memmap=False, buffer_cls=SequentialReplayBuffer, seed=cfg.seed
    )
    for t in range(steps):
        step: dict[str, np.ndarray] = {}
        for k in obs_keys:
            space = obs_space[k]
            step[k] = rng.integers(0, 256, (1, n_envs, *space.shape)).astype(space.dtype)
        if is_continuous:
            step["actions"] = rng.uniform(-1, 1, (1, n_envs, sum(actions_dim))).astype(np.float32)
        else:
            step["actions"] = np.concatenate(
                [np.eye(n, dtype=np.float32)[rng.integers(0, n, (1, n_envs))] for n in actions_dim], axis=-1
            )
        step["rewards"] = rng.normal(size=(1, n_envs, 1))
        step["truncated"] = np.zeros((1, n_envs, 1))
        step["terminated"] = np.zeros((1, n_envs, 1))
        step["is_first"] = np.full((1, n_envs, 1), float(t == 0))
        rb.add(step, validate_args=cfg.buffer.validate_args)
    return next(iter(sample_batches(fabric, cfg, rb, 1)))


def run(fabric: Any, cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What main() does up to its first gradient step, then the measurements."""
    import gymnasium as gym
    import sheeprl
    import torch
    from sheeprl.utils.env import make_env
    from torch.utils.flop_counter import FlopCounterMode

    # reproducible() of run_algorithm
    fabric.seed_everything(cfg.seed)
    torch.backends.cudnn.benchmark = cfg.torch_backends_cudnn_benchmark
    torch.backends.cudnn.deterministic = cfg.torch_backends_cudnn_deterministic
    torch.use_deterministic_algorithms(cfg.torch_use_deterministic_algorithms)

    cfg.env.frame_stack = -1
    env = make_env(cfg, cfg.seed, 0, None, "train", vector_env_idx=0)()
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    is_continuous = isinstance(action_space, gym.spaces.Box)
    is_multidiscrete = isinstance(action_space, gym.spaces.MultiDiscrete)
    actions_dim = tuple(
        action_space.shape
        if is_continuous
        else (action_space.nvec.tolist() if is_multidiscrete else [action_space.n])
    )
    if cfg.algo.name == "dreamer_v3_5":
        train_step, modules, batch = train_step_v3_5(
            fabric, cfg, observation_space, actions_dim, is_continuous
        )
    else:
        train_step, modules, batch = train_step_v3(fabric, cfg, observation_space, actions_dim, is_continuous)

    for _ in range(args.warmup):
        train_step()
    with FlopCounterMode(display=False) as counter:
        train_step()
    flop = counter.get_total_flops()
    step_s, times = median_seconds(train_step, args.steps)
    params = sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)
    result: dict[str, Any] = {
        "implementation": "sheeprl",
        "sheeprl_version": sheeprl.__version__,
        "torch_version": torch.__version__,
        "exp": args.exp,
        "algo": args.algo,
        "env_id": args.env_id,
        "observation_space": {k: [list(v.shape), str(v.dtype)] for k, v in observation_space.spaces.items()},
        "actions_dim": [int(n) for n in actions_dim],
        "batch": cfg.algo.per_rank_batch_size,
        "length": cfg.algo.per_rank_sequence_length,
        "batch_layout": {k: [list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in batch.items()},
        "device": str(fabric.device),
        "precision": str(cfg.fabric.precision),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "allocator": args.allocator,
        "params": int(params),
        "warmup": args.warmup,
        "steps": args.steps,
        "step_times_s": times,
        "gflop_per_step": flop / 1e9,
        "train_step_s": step_s,
        "train_steps_per_s": 1.0 / step_s,
        "achieved_gflops": flop / 1e9 / step_s,
    }
    if args.peak:
        result["peak_gflops"] = matmul_peak_gflops()
        result["peak_fraction"] = result["achieved_gflops"] / result["peak_gflops"]
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def sequence_batch_v3_5(
    fabric: Any,
    cfg: Any,
    obs_keys: list[str],
    obs_space: Any,
    actions_dim: Sequence[int],
    is_continuous: bool,
) -> dict:
    """A batch as ``dreamer_v3_5``'s main() passes it to ``train``: time-major ``[context + T, B, ...]``
    tensors in the dtypes its replay buffer holds (observations as the env gives them, float32 actions,
    rewards and flags, and the latent state of every step, ``deter`` float16 and ``stoch`` class
    indices, which the first ``algo.replay_context`` steps start the training from)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(cfg.seed)
    wm = cfg.algo.world_model
    T = cfg.algo.replay_context + cfg.algo.per_rank_sequence_length
    B = cfg.algo.per_rank_batch_size
    data: dict[str, np.ndarray] = {}
    for k in obs_keys:
        space = obs_space[k]
        data[k] = rng.integers(0, 256, (T, B, *space.shape)).astype(space.dtype)
    if is_continuous:
        data["actions"] = rng.uniform(-1, 1, (T, B, sum(actions_dim))).astype(np.float32)
    else:
        data["actions"] = np.concatenate(
            [np.eye(n, dtype=np.float32)[rng.integers(0, n, (T, B))] for n in actions_dim], axis=-1
        )
    data["rewards"] = rng.normal(size=(T, B, 1)).astype(np.float32)
    data["terminated"] = np.zeros((T, B, 1), np.float32)
    data["truncated"] = np.zeros((T, B, 1), np.float32)
    data["is_first"] = np.zeros((T, B, 1), np.float32)
    data["deter"] = rng.normal(size=(T, B, wm.recurrent_model.recurrent_state_size)).astype(np.float16)
    data["stoch"] = rng.integers(0, wm.discrete_size, (T, B, wm.stochastic_size)).astype(np.uint8)
    return {k: torch.as_tensor(v, device=fabric.device) for k, v in data.items()}


def moments_and_aggregator(fabric: Any, cfg: Any, moments_cls: Any) -> tuple[Any, Any]:
    """The return-percentile tracker (``moments_cls``, each algorithm's own ``Moments``) and the
    metric aggregator, as both algorithms' main() build them."""
    import hydra
    from sheeprl.utils.metric import MetricAggregator

    moments = moments_cls(
        cfg.algo.actor.moments.decay,
        cfg.algo.actor.moments.max,
        cfg.algo.actor.moments.percentile.low,
        cfg.algo.actor.moments.percentile.high,
    )
    aggregator = None
    if not MetricAggregator.disabled:
        aggregator = hydra.utils.instantiate(cfg.metric.aggregator, _convert_="all").to(fabric.device)
    return moments, aggregator


def train_step_v3(
    fabric: Any, cfg: Any, observation_space: Any, actions_dim: Sequence[int], is_continuous: bool
) -> tuple[Callable[[], None], tuple[Any, ...], dict]:
    """``dreamer_v3``: its models, three optimizers, ``Moments`` and a replay-sampled batch as its main()
    builds them, and a function running what main() runs per gradient step (the target critic's
    update, then ``train``). Returns ``(step, modules, batch)``."""
    import hydra
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.algos.dreamer_v3.dreamer_v3 import train
    from sheeprl.algos.dreamer_v3.utils import Moments

    obs_keys = cfg.algo.cnn_keys.encoder + cfg.algo.mlp_keys.encoder
    world_model, actor, critic, target_critic, _player = build_agent(
        fabric, actions_dim, is_continuous, cfg, observation_space
    )
    world_optimizer = hydra.utils.instantiate(
        cfg.algo.world_model.optimizer, params=world_model.parameters(), _convert_="all"
    )
    actor_optimizer = hydra.utils.instantiate(
        cfg.algo.actor.optimizer, params=actor.parameters(), _convert_="all"
    )
    critic_optimizer = hydra.utils.instantiate(
        cfg.algo.critic.optimizer, params=critic.parameters(), _convert_="all"
    )
    world_optimizer, actor_optimizer, critic_optimizer = fabric.setup_optimizers(
        world_optimizer, actor_optimizer, critic_optimizer
    )
    moments, aggregator = moments_and_aggregator(fabric, cfg, Moments)

    batch = random_batch(fabric, cfg, obs_keys, observation_space, actions_dim, is_continuous)
    gradient_steps = 0

    def train_step() -> None:
        # main()'s inner loop, for one batch
        nonlocal gradient_steps
        if gradient_steps % cfg.algo.critic.per_rank_target_network_update_freq == 0:
            tau = 1 if gradient_steps == 0 else cfg.algo.critic.tau
            for cp, tcp in zip(critic.module.parameters(), target_critic.parameters()):
                tcp.data.copy_(tau * cp.data + (1 - tau) * tcp.data)
        train(
            fabric,
            world_model,
            actor,
            critic,
            target_critic,
            world_optimizer,
            actor_optimizer,
            critic_optimizer,
            batch,
            aggregator,
            cfg,
            is_continuous,
            actions_dim,
            moments,
        )
        gradient_steps += 1

    return train_step, (world_model, actor, critic), batch


def train_step_v3_5(
    fabric: Any, cfg: Any, observation_space: Any, actions_dim: Sequence[int], is_continuous: bool
) -> tuple[Callable[[], None], tuple[Any, ...], dict]:
    """``dreamer_v3_5`` (sheeprl's port of the Nature-paper DreamerV3, with the official size presets):
    its models, its one optimizer and ``Moments`` as its main() builds them, and a function running
    what main() runs per gradient step (``train``, then the target critic's update). Returns
    ``(step, modules, batch)``."""
    import hydra
    from sheeprl.algos.dreamer_v3_5.agent import build_agent
    from sheeprl.algos.dreamer_v3_5.dreamer_v3_5 import train, update_target_critic
    from sheeprl.algos.dreamer_v3_5.utils import Moments

    world_model, actor, critic, target_critic, _player = build_agent(
        fabric, actions_dim, is_continuous, cfg, observation_space
    )
    optimizer = hydra.utils.instantiate(
        cfg.algo.optimizer,
        params=[*world_model.parameters(), *actor.parameters(), *critic.parameters()],
        _convert_="all",
    )
    optimizer = fabric.setup_optimizers(optimizer)
    moments, aggregator = moments_and_aggregator(fabric, cfg, Moments)
    obs_keys = cfg.algo.cnn_keys.encoder + cfg.algo.mlp_keys.encoder
    batch = sequence_batch_v3_5(fabric, cfg, obs_keys, observation_space, actions_dim, is_continuous)
    gradient_steps = 0

    def step() -> None:
        nonlocal gradient_steps
        train(
            fabric,
            cfg,
            world_model,
            actor,
            critic,
            target_critic,
            optimizer,
            moments,
            batch,
            aggregator,
            actions_dim,
        )
        if gradient_steps % cfg.algo.critic.per_rank_target_network_update_freq == 0:
            update_target_critic(critic, target_critic, cfg.algo.critic.tau)
        gradient_steps += 1

    return step, (world_model, actor, critic), batch


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Before torch is imported: the OpenMP pool is sized when it starts.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.allocator == "tuned" and sys.platform.startswith("linux"):
        tune_allocator()
    if args.allocator == "jemalloc" and "libjemalloc" not in Path("/proc/self/maps").read_text():
        print("error: --allocator jemalloc, but libjemalloc is not preloaded (LD_PRELOAD)", file=sys.stderr)
        return 1
    import torch

    torch.set_num_threads(args.threads)
    cfg = compose_config(args)
    fabric = make_fabric(cfg)
    torch.set_num_threads(args.threads)
    result = fabric.launch(run, cfg, args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
