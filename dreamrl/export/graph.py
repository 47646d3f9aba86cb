"""The deterministic policy step as one module of tensors in and tensors out.

:class:`PolicyStep` is what ``dreamrl export`` traces: the agent's
:meth:`~dreamrl.agents.dreamer.DreamerAgent.policy` with ``deterministic=True``, its
recurrent state spelled out as named tensors. One call is one env step for ``N`` envs::

    (obs..., is_first, state...) -> (action, env_action, next state...)

- ``obs``: one tensor per observation key, as the agent's ``obs_space`` gives it (images
  ``uint8 [N, H, W, C]``, vectors ``float32 [N, D]``), in :attr:`PolicyStep.obs_keys` order;
- ``is_first``: ``bool [N]``, true on the first step of an episode (the state is reset);
- ``state``: the world model's state tensors (:func:`~dreamrl.world_models.base.state_items`)
  and the previous action in the model's format (one-hot, or the vector in [-1, 1]); all
  zeros start an episode, as ``state=None`` does for the library;
- ``action``: the action as the library's ``policy`` returns it (an ``int32 [N]`` index,
  or ``float32 [N, A]`` in [-1, 1]); ``env_action``: the same mapped to the env's action
  space, as ``agent.act`` returns it (the index plus the space's start, or the vector
  rescaled to ``[low, high]`` and shaped as the env's Box).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from dreamrl.spaces import action_width
from dreamrl.world_models.base import State, state_from_items, state_items

if TYPE_CHECKING:
    from dreamrl.agents.dreamer import DreamerAgent

OBS = "observation"
IS_FIRST = "is_first"
STATE = "state"
ACTION = "action"
ENV_ACTION = "env_action"


class Tensor(NamedTuple):
    """One input or output of the exported step: its name, dtype, shape (``"N"`` for the
    batch dimension) and role (:data:`OBS`, :data:`IS_FIRST`, :data:`STATE`,
    :data:`ACTION` or :data:`ENV_ACTION`)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    role: str

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape after the batch dimension."""
        return tuple(int(d) for d in self.shape[1:])


def state_name(item: str) -> str:
    """Input name of the state tensor ``item`` (a dotted :func:`state_items` name)."""
    return "state_" + item.replace(".", "_")


def next_name(name: str) -> str:
    """Output name of the next value of state input ``name``."""
    return "next_" + name


PREV_ACTION = "prev_action"  # the state item holding the previous action, model format


class PolicyStep(nn.Module):
    """``agent``'s deterministic policy step with its state explicit (see the module
    docstring). Built from a float32 agent: the exported graph holds no autocast."""

    def __init__(self, agent: DreamerAgent):
        super().__init__()
        self.wm = agent.wm
        self.actor = agent.ac.actor
        self.obs_keys = list(agent.obs_space)
        self.discrete = agent.act_space.discrete
        # The model state's structure: state_from_items rebuilds the model's own type.
        self.template: State = agent.wm.initial(1, "cpu")
        self.model_items = list(state_items(self.template))
        self.state_items = [*self.model_items, PREV_ACTION]
        conv = agent.act_converter
        self.env_shape: tuple[int, ...] = tuple(conv.shape) if conv is not None else ()
        offset, low, high = 0, torch.zeros(0), torch.zeros(0)
        if conv is not None and conv.classes:
            offset = int(conv.low[0]) if conv.low is not None else 0
        elif conv is not None:
            assert conv.low is not None and conv.high is not None
            low = torch.as_tensor(conv.low, dtype=torch.float32)
            high = torch.as_tensor(conv.high, dtype=torch.float32)
        self.offset = offset
        self.low: torch.Tensor
        self.high: torch.Tensor
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("high", high, persistent=False)
        self.has_env_action = conv is not None
        self.signature = self._signature(agent)

    def _signature(self, agent: DreamerAgent) -> tuple[list[Tensor], list[Tensor]]:
        inputs = [Tensor(k, s.dtype, ("N", *s.shape), OBS) for k, s in agent.obs_space.items()]
        inputs.append(Tensor(IS_FIRST, "bool", ("N",), IS_FIRST))
        state = {**state_items(self.template), PREV_ACTION: torch.zeros(1, action_width(agent.act_space))}
        for item, value in state.items():
            inputs.append(Tensor(state_name(item), _dtype(value), ("N", *value.shape[1:]), STATE))
        act = agent.act_space
        outputs = [
            Tensor(ACTION, "int32", ("N",), ACTION)
            if act.discrete
            else Tensor(ACTION, "float32", ("N", *act.shape), ACTION)
        ]
        if self.has_env_action:
            env = Tensor(ENV_ACTION, "int32", ("N",), ENV_ACTION)
            if not act.discrete:
                env = Tensor(ENV_ACTION, "float32", ("N", *self.env_shape), ENV_ACTION)
            outputs.append(env)
        outputs += [Tensor(next_name(t.name), t.dtype, t.shape, STATE) for t in inputs if t.role == STATE]
        names = [t.name for t in (*inputs, *outputs)]
        if len(set(names)) != len(names):
            raise ValueError(f"the exported step's tensor names collide: {names}")
        return inputs, outputs

    @property
    def inputs(self) -> list[Tensor]:
        return self.signature[0]

    @property
    def outputs(self) -> list[Tensor]:
        return self.signature[1]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs and outputs in :attr:`inputs` and :attr:`outputs` order."""
        k = len(self.obs_keys)
        obs = dict(zip(self.obs_keys, tensors[:k]))
        is_first = tensors[k]
        state = dict(zip(self.state_items, tensors[k + 1 :]))
        model = state_from_items(self.template, {i: state[i] for i in self.model_items})
        model = self.wm.observe_step(model, state[PREV_ACTION], obs, is_first, sample=False)
        action = self.actor(self.wm.features(model)).mode()
        if self.discrete:
            index = action.argmax(-1).to(torch.int32)
            out = [index, index + self.offset] if self.has_env_action else [index]
        else:
            action = action.clamp(-1, 1)
            out = [action]
            if self.has_env_action:
                env = self.low + (action + 1.0) * 0.5 * (self.high - self.low)
                out.append(env.reshape(-1, *self.env_shape))
        return (*out, *state_items(model).values(), action)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def example_inputs(step: PolicyStep, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Inputs for ``batch`` envs on their first step (zeros, ``is_first`` true): what
    the exporters trace the step on."""
    out = []
    for t in step.inputs:
        shape = (batch, *t.dims)
        if t.role == IS_FIRST:
            out.append(torch.ones(shape, dtype=torch.bool))
        else:
            out.append(torch.zeros(shape, dtype=getattr(torch, t.dtype)))  # type: ignore[arg-type]
    return tuple(out)
