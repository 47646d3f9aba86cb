"""The DreamerV3 agent: acts with an explicit recurrent state, trains on replayed batches.

The agent owns its networks, optimiser and random generators, and nothing else: no env,
no logger, no step counter. A run loop hands it batches and observations.

Python use, without the CLI::

    agent = Agent.load("runs/cartpole")          # a run dir or a checkpoint dir
    obs, _ = env.reset(seed=123)
    action, state = agent.act(obs)               # state=None starts an episode
    obs, reward, terminated, truncated, _ = env.step(action)
    action, state = agent.act(obs, state)
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.profiler import record_function

from dreamrl.agents.base import Replica, TrainResult
from dreamrl.agents.meta import agent_meta, read_agent_meta
from dreamrl.behaviors.actor_critic import (
    ActorCritic,
    Imagined,
    ReturnStats,
    imag_loss,
    imagined_continue,
    repl_loss,
)
from dreamrl.behaviors.mpc import DreamerPlanModel, Plan, PlanInfo, initial_plan, plan_action, reset_plan
from dreamrl.behaviors.plan_stats import (
    PlanStats,
    ReturnWindows,
    compare_to_actor,
    empty_windows,
    open_windows,
    receive,
)
from dreamrl.config import Config, validate
from dreamrl.config_tree import replace as replace_config
from dreamrl.devices import resolve_device
from dreamrl.envs.convert import ActionConverter, ObsConverter, model_observation
from dreamrl.nets.heads import ActionDist
from dreamrl.optim import LaProp
from dreamrl.precision import autocast as precision_autocast
from dreamrl.precision import bfloat16_is_native, compute_dtype, to_compute_dtype
from dreamrl.rundir import AGENT_META, AGENT_WEIGHTS
from dreamrl.spaces import STEP_KEYS, Space, action_width
from dreamrl.world_models import make_world_model
from dreamrl.world_models.base import Batch, State, map_state, state_from_items, state_items
from dreamrl.world_models.rssm import continue_target

AGENT_FORMAT = 1


class PolicyState(NamedTuple):
    """Recurrent state carried between :meth:`DreamerAgent.policy` calls, ``[N, ...]``."""

    model: State  # the world model's state
    action: torch.Tensor  # previous action, model format [N, A]
    plan: torch.Tensor | None = None  # agent.act=mpc: the planner's last plan [N, H, A]
    # agent.act=mpc: the planned steps whose next H rewards are still coming (plan_stats.py)
    windows: ReturnWindows | None = None


class DreamerAgent:
    """World model plus actor-critic, trained together by one LaProp optimiser."""

    def __init__(
        self,
        config: Config,
        obs_space: Mapping[str, Space],
        act_space: Space,
        device: str | torch.device | None = None,
        obs_converter: ObsConverter | None = None,
        act_converter: ActionConverter | None = None,
    ):
        self.config = config
        self.obs_space = dict(obs_space)
        self.act_space = act_space
        self.device = resolve_device(config.compute.device) if device is None else torch.device(device)
        self.obs_converter = obs_converter
        self.act_converter = act_converter
        cfg = config.agent
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.wm = make_world_model(obs_space, act_space, cfg, config.compute).to(self.device)
            self.ac = ActorCritic(self.wm.feat_dim, act_space, cfg).to(self.device)
        if config.compute.precision == "bfloat16" and not bfloat16_is_native(self.device):
            warnings.warn(
                f"compute.precision=bfloat16 on a {self.device.type} without bfloat16 units: it is emulated "
                "there and slower than float32",
                stacklevel=2,
            )
        params = [p for m in (self.wm, self.ac) for p in m.parameters() if p.requires_grad]
        opt = cfg.opt
        self.opt = LaProp(
            params,
            agc_groups=self.wm.agc_groups(),
            lr=opt.lr,
            beta1=opt.beta1,
            beta2=opt.beta2,
            eps=opt.eps,
            agc=opt.agc,
            warmup=opt.warmup,
        )
        self.train_gen = torch.Generator(self.device).manual_seed(config.seed * 2 + 1)
        self.act_gen = torch.Generator(self.device).manual_seed(config.seed * 2 + 2)
        self.updates = 0
        scales = cfg.loss_scales
        self.scales = {
            **self.wm.loss_scales(scales),
            "policy": scales.policy,
            "value": scales.value,
        }
        if cfg.repval_loss:
            self.scales["repval"] = scales.repval
        # agent.act=mpc: act by planning in the world model instead of with the actor.
        self.planner = DreamerPlanModel(self.wm, self.ac) if cfg.act == "mpc" else None
        self.plan_stats = PlanStats()
        self.replica: Replica | None = None  # set by join_ranks: data-parallel training

    # ------------------------------------------------------------------ sizes

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"wm": self.wm, "ac": self.ac}

    def param_count(self) -> int:
        """Trainable parameters (the slow critic excluded)."""
        return sum(p.numel() for m in self.modules.values() for p in m.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ training

    def to_batch(self, data: Mapping[str, np.ndarray]) -> Batch:
        """Replay output ``{key: [B, T, ...]}`` to tensors on the agent's device."""
        dev = self.device
        obs = {k: torch.as_tensor(data[k], device=dev) for k in self.obs_space}
        action = torch.as_tensor(data["action"], device=dev)
        if self.act_space.discrete:
            action = torch.nn.functional.one_hot(action.long(), self.act_space.classes).float()
        else:
            action = action.float()
        flags = {k: torch.as_tensor(data[k], device=dev) for k in STEP_KEYS}
        return Batch(
            obs=obs,
            action=action,
            reward=flags["reward"].float(),
            is_first=flags["is_first"].bool(),
            is_last=flags["is_last"].bool(),
            is_terminal=flags["is_terminal"].bool(),
        )

    def losses(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], ReturnStats]:
        """Every loss term, unscaled, metrics, and the return normaliser's statistics
        with this batch taken in (kept only if the update is applied): the whole
        DreamerV3 objective."""
        cfg = self.config.agent
        B, T = batch.is_first.shape
        losses, post, metrics = self.wm.loss(batch, self.train_gen)

        # The actor-critic learns from H steps imagined from every posterior state (the
        # last K with imag_last=K); with agent.ac_data=replay from those K replayed steps.
        K = min(cfg.imag_last or T, T)
        if cfg.ac_data == "replay":
            feat, traj = self._replayed(post, batch, K)
        else:
            feat, traj = self._imagined(post, T, K)
        with record_function("ac/loss"):
            with torch.no_grad():
                slow_logits = self.ac.slow_critic(feat)
            value_logits = self.ac.critic(feat)
            imag = imag_loss(
                traj,
                self.ac.actor(feat),
                value_logits,
                slow_logits,
                self.ac.critic,
                self.ac.retnorm.current(),
                cfg,
                gather=self.replica.gather if self.replica else None,
            )
        losses.update(imag.losses)
        metrics.update(imag.metrics)
        if cfg.ac_data == "replay":
            # No imagined return from each replayed state: the replayed returns themselves,
            # and the critic's value at the last step.
            with torch.no_grad():
                boot = torch.cat([imag.returns, self.ac.critic.mean(value_logits[:, -1:])], 1)
        else:
            boot = imag.returns[:, 0].view(B, K)  # the imagined return from each start

        # Critic on replayed sequences, bootstrapped from the returns of each state.
        if cfg.repval_loss:
            rfeat = self.wm.features(post)[:, T - K :]
            rfeat = rfeat if cfg.repval_grad else rfeat.detach()
            with torch.no_grad():
                slow_r = self.ac.slow_critic(rfeat)
            sl = slice(T - K, T)
            losses.update(
                repl_loss(
                    batch.is_last[:, sl],
                    batch.is_terminal[:, sl],
                    batch.reward[:, sl],
                    boot,
                    self.ac.critic(rfeat),
                    slow_r,
                    self.ac.critic,
                    cfg,
                )
            )
        if set(losses) != set(self.scales):
            raise RuntimeError(f"loss terms {sorted(losses)} do not match scales {sorted(self.scales)}")
        return losses, metrics, imag.return_stats

    def _imagined(self, post: State, length: int, keep: int) -> tuple[torch.Tensor, Imagined]:
        """Features ``[N, H+1, F]`` and predictions of H steps imagined under the actor from
        the last ``keep`` of the ``length`` posterior states of each sequence (``N = B*keep``),
        the paper's."""
        cfg = self.config.agent
        T, K = length, keep
        starts = map_state(lambda t: t[:, T - K :].flatten(0, 1), post)
        start_feat = self.wm.features(starts)
        with record_function("ac/imagine"), torch.no_grad():

            def act(features: torch.Tensor) -> torch.Tensor:
                return self.ac.actor(features).sample(self.train_gen)

            # [N, H+1, F], no gradient to the world model. Held in the compute dtype: under
            # bfloat16 autocast every head below would cast it anyway, and one cast shared
            # by all of them is one copy of 84 MB at size12m instead of one per head.
            feat, actions = self.wm.imagine(
                map_state(torch.Tensor.detach, starts),
                act,
                cfg.imag_length,
                self.train_gen,
                compute_dtype(start_feat),
            )
            last = self.ac.actor(feat[:, -1]).sample(self.train_gen)
            actions = torch.cat([actions, last[:, None]], 1)  # [N, H+1, A]
        if cfg.ac_grads:
            feat = to_compute_dtype(torch.cat([start_feat[:, None], feat[:, 1:]], 1))
        with record_function("ac/loss"), torch.no_grad():
            reward = self.wm.reward.mean(self.wm.reward(feat))
            cont = imagined_continue(torch.sigmoid(self.wm.cont(feat)), cfg)
        return feat, Imagined(actions, reward, cont)

    def _replayed(self, post: State, batch: Batch, keep: int) -> tuple[torch.Tensor, Imagined]:
        """Features ``[B, keep, F]`` of the last ``keep`` posterior states of each replayed
        sequence, and what really followed them: the actions taken, the real rewards and
        terminals, and where episodes ended (``agent.ac_data=replay``)."""
        cfg = self.config.agent
        T = batch.is_first.shape[1]
        sl = slice(T - keep, T)
        feat = self.wm.features(post)[:, sl]
        feat = feat if cfg.ac_grads else feat.detach()
        cont = continue_target(batch.is_terminal[:, sl], cfg.horizon, cfg.contdisc)
        return feat, Imagined(batch.action[:, sl], batch.reward[:, sl], cont, batch.is_last[:, sl])

    def train_step(self, data: Mapping[str, np.ndarray]) -> TrainResult:
        """One update of every module on a replay batch, with float metrics.

        A non-finite loss or gradient would poison every weight it reaches: the update
        is skipped instead, and nothing of the agent changes (weights, optimiser, slow
        critic, return normaliser); the result's ``nonfinite`` names the loss terms (or
        ``gradient``) at fault and ``train/skipped`` is 1 in its metrics.
        """
        batch = self.to_batch(data)
        with self.autocast():  # the backward pass runs outside, in the dtypes the forward chose
            losses, metrics, return_stats = self.losses(batch)
        total = sum(self.scales[k] * v.mean() for k, v in losses.items())
        assert isinstance(total, torch.Tensor)
        self.opt.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(total))
        if finite:
            with record_function("backward"):
                total.backward()
        if self.replica is not None:  # every rank takes part, whatever its loss: they skip together
            with record_function("allreduce"):
                everywhere = self.replica.average_gradients(self.opt.param_groups[0]["params"], finite)
        else:
            everywhere = finite
        if not finite:
            bad = tuple(k for k, v in losses.items() if not torch.isfinite(v).all()) or ("total",)
            return TrainResult({"train/skipped": 1.0}, bad)
        if not everywhere:
            self.opt.zero_grad(set_to_none=True)
            return TrainResult({"train/skipped": 1.0}, ("loss on another rank",))
        grads = [p.grad for p in self.opt.param_groups[0]["params"] if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if not torch.isfinite(grad_norm):
            self.opt.zero_grad(set_to_none=True)
            return TrainResult({"train/skipped": 1.0}, ("gradient",))
        with record_function("optimizer"):
            self.opt.step()
            self.ac.update_slow_critic()
            self.ac.retnorm.commit(return_stats)
        self.updates += 1
        out = {f"loss/{k}": v.detach().mean() for k, v in losses.items()}
        out.update(metrics)
        out["loss/total"] = total.detach()
        out["grad/norm"] = grad_norm
        names = list(out)
        values = torch.stack([torch.as_tensor(out[k], dtype=torch.float32).reshape(()) for k in names])
        result = dict(zip(names, values.cpu().tolist()))
        result["train/updates"] = float(self.updates)
        result["train/skipped"] = 0.0
        return TrainResult(result)

    # ------------------------------------------------------------------ data parallel

    def join_ranks(self, replica: Replica) -> None:
        """Train as replica ``replica.rank`` of ``replica.size`` (see
        :class:`dreamrl.agents.base.DataParallel`): rank 0's weights, generators seeded for
        this rank (rank 0 keeps the run's, so one rank trains as one process does),
        gradients and the return percentiles taken over every rank's batch."""
        self.replica = replica
        replica.broadcast([t for m in self.modules.values() for t in m.state_dict().values()])
        if replica.rank:
            seeds = np.random.SeedSequence([self.config.seed, replica.rank]).generate_state(2)
            self.train_gen.manual_seed(int(seeds[0]))
            self.act_gen.manual_seed(int(seeds[1]))

    def replica_tensors(self) -> dict[str, torch.Tensor]:
        """This replica's random generators (everything else is the same on every rank)."""
        return {"rng.train": self.train_gen.get_state(), "rng.act": self.act_gen.get_state()}

    def restore_replica(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.train_gen.set_state(tensors["rng.train"])
        self.act_gen.set_state(tensors["rng.act"])

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """The context the agent's forward passes run in for ``compute.precision``."""
        return precision_autocast(self.config.compute.precision, self.device)

    def weights_finite(self) -> bool:
        """Whether every weight and buffer is finite (checked before each checkpoint)."""
        tensors = [t for m in self.modules.values() for t in m.state_dict().values() if t.is_floating_point()]
        return bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())

    # ------------------------------------------------------------------ acting

    def init_state(self, batch: int) -> PolicyState:
        """Zero state for ``batch`` envs (the first observation resets it anyway)."""
        width = action_width(self.act_space)
        return PolicyState(
            self.wm.initial(batch, self.device),
            torch.zeros(batch, width, device=self.device),
        )

    @torch.no_grad()
    def policy(
        self,
        obs: Mapping[str, np.ndarray],
        state: PolicyState | None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, PolicyState]:
        """Actions for a batch of step dicts ``{key: [N, ...]}`` (must hold ``is_first``).

        Returns actions in dreamrl's env format (index ``[N]`` int32 for discrete,
        ``[N, A]`` float32 in [-1, 1] for continuous) and the next state.
        ``deterministic`` takes the mode of the latent and of the action.
        """
        n = len(obs["is_first"])
        state = state or self.init_state(n)
        tensors = {k: torch.as_tensor(np.asarray(obs[k]), device=self.device) for k in self.obs_space}
        is_first = torch.as_tensor(np.asarray(obs["is_first"]), device=self.device)
        plan, windows = state.plan, state.windows
        with self.autocast():
            model = self.wm.observe_step(
                state.model, state.action, tensors, is_first, sample=not deterministic, generator=self.act_gen
            )
            dist = self.ac.actor(self.wm.features(model))
            if self.planner is None:
                action = dist.mode() if deterministic else dist.sample(self.act_gen)
            else:
                action, plan, info = self._plan(model, plan, is_first, dist, deterministic)
                windows = self._match(windows, obs, is_first, info.rewards)
        if self.act_space.discrete:
            out = action.argmax(-1).to(torch.int32).cpu().numpy()
        else:
            action = action.clamp(-1, 1)
            out = action.cpu().numpy().astype(np.float32)
        return out, PolicyState(model, action, plan, windows)

    def _plan(
        self,
        model: State,
        plan: torch.Tensor | None,
        is_first: torch.Tensor,
        actor: ActionDist,
        deterministic: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, PlanInfo]:
        """The planner's action ``[N, A]`` from the world-model states ``model [N, ...]``,
        its new plan and what it says of it; its time and its departure from the actor's
        distribution ``actor`` go into :attr:`plan_stats`."""
        assert self.planner is not None
        cfg = self.config.agent.mpc
        n = len(is_first)
        start = time.perf_counter()
        previous = (
            Plan(plan)
            if plan is not None
            else initial_plan(n, cfg.horizon, action_width(self.act_space), self.device)
        )
        previous = reset_plan(previous, is_first)
        action, new_plan, info = plan_action(model, self.planner, cfg, previous, self.act_gen, deterministic)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        differs, gap = compare_to_actor(action, actor, self.act_space.discrete)
        self.plan_stats.add(seconds, differs, gap, info.ret)
        return action, new_plan.mean, info

    def _match(
        self,
        windows: ReturnWindows | None,
        obs: Mapping[str, np.ndarray],
        is_first: torch.Tensor,
        planned: torch.Tensor,
    ) -> ReturnWindows | None:
        """Set the rewards that arrived with ``obs`` against the planned ones whose
        horizon they complete (:mod:`dreamrl.behaviors.plan_stats`), and open a window
        for this step's plan, ``planned [N]``. None, matching nothing, for a caller that
        passes no rewards (:meth:`act`)."""
        if "reward" not in obs:
            return None
        cfg = self.config.agent
        n = len(is_first)
        if windows is None:
            windows = empty_windows(n, cfg.mpc.horizon, self.device)
        dev = self.device
        reward = torch.as_tensor(np.asarray(obs["reward"]), device=dev)

        def flag(key: str) -> torch.Tensor:
            if key not in obs:
                return torch.zeros(n, dtype=torch.bool, device=dev)
            return torch.as_tensor(np.asarray(obs[key]), device=dev).bool()

        is_last = flag("is_last")
        windows, planned_done, received = receive(
            windows, reward, is_first, is_last, flag("is_terminal"), 1 - 1 / cfg.horizon
        )
        self.plan_stats.add_windows(planned_done, received)
        return open_windows(windows, planned, ~is_last)

    def policy_metrics(self) -> dict[str, float]:
        """What acting has cost and shown since the last call, ``mpc/*`` (see
        :class:`~dreamrl.behaviors.plan_stats.PlanStats`), and starts afresh; empty when
        the agent acts with the actor. The training loop logs these with its collection
        metrics, and ``dreamrl eval`` prints them."""
        return self.plan_stats.summary()

    def act(
        self, obs: Any, state: PolicyState | None = None, deterministic: bool = True
    ) -> tuple[Any, PolicyState]:
        """One env's action for one observation, as your gymnasium env takes it.

        ``obs`` is what the env returned (for an env trained with ``env.pixels=true``,
        pass ``env.render()``), or a dict of dreamrl's observation keys. ``state=None``
        starts a new episode. Returns ``(env_action, state)``.
        """
        first = state is None
        model_obs = model_observation(obs, self.obs_space, self.obs_converter)
        batch = {k: v[None] for k, v in model_obs.items()}
        batch["is_first"] = np.array([first])
        actions, state = self.policy(batch, state, deterministic)
        action = actions[0]
        if self.act_converter is not None:
            return self.act_converter(action), state
        return action, state

    # ------------------------------------------------------------------ saving

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the agent's state: weights, optimiser moments, generators."""
        out: dict[str, torch.Tensor] = {}
        for name, module in self.modules.items():
            for key, value in module.state_dict().items():
                out[f"{name}.{key}"] = value
        names = {
            id(p): n
            for name, m in self.modules.items()
            for n, p in ((f"{name}.{k}", p) for k, p in m.named_parameters())
        }
        for p, state in self.opt.state.items():
            for key, value in state.items():
                out[f"opt.{names[id(p)]}.{key}"] = value
        out["rng.train"] = self.train_gen.get_state()
        out["rng.act"] = self.act_gen.get_state()
        return {k: v.detach().contiguous().cpu() for k, v in out.items()}

    def load_state_tensors(self, tensors: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        for name, module in self.modules.items():
            prefix = name + "."
            sub = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(sub, strict=strict)
        params = {f"{name}.{k}": p for name, m in self.modules.items() for k, p in m.named_parameters()}
        for pname, p in params.items():
            keys = {
                k.rsplit(".", 1)[-1]: v
                for k, v in tensors.items()
                if k.startswith(f"opt.{pname}.") and k.count(".") == pname.count(".") + 2
            }
            if keys:
                self.opt.state[p] = {k: v.to(self.device) if k != "step" else v for k, v in keys.items()}
        if "rng.train" in tensors:
            self.train_gen.set_state(tensors["rng.train"])
            self.act_gen.set_state(tensors["rng.act"])

    def meta(self) -> dict[str, Any]:
        """What is needed to rebuild the agent, and versions, as JSON."""
        return agent_meta(self, AGENT_FORMAT)

    def save(self, directory: str | Path) -> None:
        """Write ``agent.safetensors``, ``agent.json`` and a manifest of both into
        ``directory`` (a checkpoint adds its own files and rewrites the manifest)."""
        from dreamrl.run.checkpoint import write_manifest

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.state_tensors(), str(directory / AGENT_WEIGHTS))
        (directory / AGENT_META).write_text(json.dumps(self.meta(), indent=1))
        write_manifest(directory)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device | None = None, act: str | None = None
    ) -> DreamerAgent:
        """Load from a checkpoint dir, or from a run dir (its newest checkpoint); ``act``
        (``actor`` or ``mpc``) replaces how it was trained to act (``agent.act``).

        Loading runs no code from the files: weights come through safetensors and the
        rest is JSON. A run dir may be in training meanwhile (its old checkpoints are
        pruned as new ones land): a checkpoint that vanishes while it is read is passed
        over for the next newest.
        """
        from dreamrl.run.checkpoint import read_newest

        return read_newest(Path(path), lambda directory: cls._load_dir(directory, device, act))

    @classmethod
    def _load_dir(
        cls, directory: Path, device: str | torch.device | None, act: str | None = None
    ) -> DreamerAgent:
        meta = read_agent_meta(directory, AGENT_FORMAT)
        config = meta.config
        if config.agent.kind != "dreamer":
            raise ValueError(
                f"{directory} holds a {config.agent.kind} agent, not a DreamerV3 one: load it with "
                "dreamrl.agents.load_agent"
            )
        if act is not None:
            config = validate(replace_config(config, {"agent.act": act}))
        agent = cls(config, meta.obs_space, meta.act_space, device, meta.obs_converter, meta.act_converter)
        agent.restore(load_file(str(directory / AGENT_WEIGHTS)), meta.raw)
        return agent

    def restore(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Take back what :meth:`save` wrote: every state tensor, and the update count
        from its meta (``agent.json``). Loading and resuming both come through here."""
        self.load_state_tensors(tensors)
        self.updates = int(meta.get("updates", 0))

    def policy_state_tensors(self, state: PolicyState) -> dict[str, torch.Tensor]:
        """``state`` as the tensors a loop checkpoint holds (``policy.*``)."""
        out = {**state_items(state.model, "policy."), "policy.action": state.action}
        if state.plan is not None:
            out["policy.plan"] = state.plan
        if state.windows is not None:
            out.update(state_items(state.windows, "policy.windows."))
        return out

    def policy_state_from_tensors(self, tensors: Mapping[str, torch.Tensor]) -> PolicyState | None:
        """The state :meth:`policy_state_tensors` wrote, on this agent's device; None if absent."""
        if "policy.action" not in tensors:
            return None
        dev = self.device
        items = {k: v.to(dev) for k, v in tensors.items() if k.startswith("policy.")}
        model = state_from_items(self.wm.initial(1, dev), items, "policy.")
        windows = None
        if "policy.windows.open" in items:
            windows = state_from_items(empty_windows(1, 1, dev), items, "policy.windows.")
        return PolicyState(model, items["policy.action"], items.get("policy.plan"), windows)

    def select_rows(self, state: PolicyState, rows: torch.Tensor) -> PolicyState:
        """The states of envs ``rows`` ``[M]`` of ``state`` ``[N, ...]``."""
        rows = rows.to(self.device)
        plan = state.plan[rows] if state.plan is not None else None
        windows = state.windows.select(rows) if state.windows is not None else None
        return PolicyState(map_state(lambda t: t[rows], state.model), state.action[rows], plan, windows)
