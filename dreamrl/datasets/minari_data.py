"""Minari datasets (the Farama Foundation's format for offline RL) as dreamrl episodes.

A Minari episode of ``n`` steps holds ``n + 1`` observations (the reset's first), and
``n`` actions, rewards, ``terminations`` and ``truncations``. dreamrl stores it as
``n + 1`` steps: the reset observation with ``is_first``, then each later observation
with the reward received on arriving there; the last step has ``is_last``, and
``is_terminal`` only when the episode was terminated (a truncation, a time limit, is
never read as a terminal state). Observations go through the same
:class:`~dreamrl.envs.convert.ObsConverter` the env adapter uses, actions through the
inverse of its :class:`~dreamrl.envs.convert.ActionConverter` (an index from 0; a vector
rescaled into [-1, 1]), so the model sees the dataset as it would see the env.

``minari`` and its HDF5 storage (``h5py``) are the ``offline`` extra:
``pip install 'dreamrl[offline]'``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dreamrl.config import ConfigError, EnvConfig
from dreamrl.datasets.base import Episode
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.spaces import Space

INSTALL = "pip install 'dreamrl[offline]'"


def steps_from_transitions(
    obs: Mapping[str, np.ndarray],
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: bool,
) -> dict[str, np.ndarray]:
    """One episode in the replay's layout from ``n`` transitions.

    ``obs``: ``{key: [n+1, ...]}`` (model keys, the reset's first); ``actions``: ``[n, ...]``
    in dreamrl's form; ``rewards``: ``[n]``; ``terminated``: whether it ended in a terminal
    state. Returns ``{key: [n+1, ...]}``: the action taken at each step (zeros on the
    last), the reward received on arriving there (0 at the reset) and the three flags.
    """
    n = len(rewards)
    steps = {k: np.asarray(v) for k, v in obs.items()}
    steps["action"] = np.concatenate([actions, np.zeros_like(actions[:1])])
    steps["reward"] = np.concatenate([[0.0], rewards]).astype(np.float32)
    flags = np.zeros((3, n + 1), bool)
    flags[0, 0] = True
    flags[1, -1] = True
    flags[2, -1] = terminated
    steps["is_first"], steps["is_last"], steps["is_terminal"] = flags
    return steps


def agent_actions(converter: ActionConverter, actions: np.ndarray) -> np.ndarray:
    """The env's actions ``[n, ...]`` as dreamrl's: ``int32 [n]`` indices from 0, or
    ``float32 [n, A]`` rescaled from the env's bounds into [-1, 1] (what lies outside them
    stays outside, for the checks to find)."""
    n = len(actions)
    if converter.classes:
        offset = int(converter.low[0]) if converter.low is not None else 0
        return (np.asarray(actions).reshape(n).astype(np.int64) - offset).astype(np.int32)
    assert converter.low is not None and converter.high is not None
    flat = np.asarray(actions, np.float64).reshape(n, -1)
    span = np.where(converter.high > converter.low, converter.high - converter.low, 1.0)
    return (2.0 * (flat - converter.low) / span - 1.0).astype(np.float32)


def _at(tree: Any, t: int) -> Any:
    """Step ``t`` of a (nested dict or tuple of) array(s) ``[n+1, ...]``."""
    if isinstance(tree, dict):
        return {k: _at(v, t) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_at(v, t) for v in tree)
    return tree[t]


def _leaf_length(tree: Any) -> int:
    if isinstance(tree, dict):
        return _leaf_length(next(iter(tree.values())))
    if isinstance(tree, tuple):
        return _leaf_length(tree[0])
    return len(tree)


def open_minari(source: str) -> Any:
    """The ``minari.MinariDataset`` that ``source`` names: a dataset directory (the one
    holding ``data/``, or ``data/`` itself), else a dataset id under Minari's local
    datasets (``MINARI_DATASETS_PATH``, or ``~/.minari/datasets``)."""
    try:
        import minari
    except ImportError:
        raise ConfigError(f"--dataset {source}: reading Minari datasets needs minari: {INSTALL}") from None
    path = Path(source).expanduser()
    try:
        if path.exists():
            data = path / "data" if (path / "data" / "metadata.json").is_file() else path
            if not (data / "metadata.json").is_file():
                raise ConfigError(
                    f"--dataset {source}: neither a dreamrl run dir (config.json and replay/) nor a "
                    "Minari dataset (data/metadata.json)"
                )
            return minari.MinariDataset(data)
        return minari.load_dataset(source)
    except FileNotFoundError:
        from minari.storage.datasets_root_dir import get_dataset_path

        raise ConfigError(
            f"--dataset {source}: no such path, nor a Minari dataset of that id under "
            f"{get_dataset_path()}; `minari download {source}` fetches a published one"
        ) from None
    except ImportError as e:  # a storage format whose library is missing (arrow: pyarrow)
        raise ConfigError(
            f"--dataset {source}: its storage needs a library that is not installed ({e})"
        ) from None
    except ValueError as e:  # a malformed id, or a dataset of a Minari version this one cannot read
        raise ConfigError(f"--dataset {source}: {e}") from None


def spec_env_id(spec: Any) -> str | None:
    """The env of a gymnasium ``EnvSpec`` as ``dreamrl train --env`` takes it: its id, or
    ``module:id`` when the id is registered by importing a package gymnasium does not
    import itself (the spec's entry point names it)."""
    if spec is None:
        return None
    import gymnasium

    entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
    package = entry.partition(":")[0].split(".")[0]
    if spec.id in gymnasium.registry or not package or package == "gymnasium":
        return str(spec.id)
    return f"{package}:{spec.id}"


class MinariData:
    """A Minari dataset, read episode by episode (see the module's docstring)."""

    def __init__(self, source: str, size: tuple[int, int]):
        self.source = source
        self.dataset = open_minari(source)
        where = f"dataset {source}"
        try:
            self.obs_converter: ObsConverter | None = ObsConverter.from_gym(
                self.dataset.observation_space, size
            )
            self.act_converter: ActionConverter | None = ActionConverter.from_gym(self.dataset.action_space)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        assert self.obs_converter is not None and self.act_converter is not None
        self.obs_space: dict[str, Space] = self.obs_converter.spaces
        self.act_space: Space = self.act_converter.space

    @property
    def env_id(self) -> str | None:
        """Its evaluation env when it names one, else the env it was recorded in."""
        spec = getattr(self.dataset, "_eval_env_spec", None) or self.dataset.env_spec
        return spec_env_id(spec)

    def max_steps(self) -> int:
        return int(self.dataset.total_steps) + int(self.dataset.total_episodes)

    def notes(self) -> list[str]:
        return []

    def hint(self, env_config: EnvConfig) -> str:
        if env_config.pixels:
            return "a Minari dataset holds the env's observations, not its renders: leave env.pixels off"
        if env_config.repeat != 1:
            return f"a Minari dataset holds every env step: env.repeat is {env_config.repeat}"
        return ""

    def episodes(self) -> Iterator[Episode]:
        assert self.obs_converter is not None and self.act_converter is not None
        for raw in self.dataset.iterate_episodes():
            name = f"dataset {self.source}, episode {raw.id}"
            yield Episode(name, episode_steps(name, raw, self.obs_converter, self.act_converter))


def episode_steps(
    name: str, raw: Any, obs_converter: ObsConverter, act_converter: ActionConverter
) -> dict[str, np.ndarray]:
    """A Minari episode (``EpisodeData``: observations, actions, rewards, terminations,
    truncations) in the replay's layout, after the checks only the raw record allows:
    its parts' lengths, and where it says it was terminated or truncated. ``name`` goes
    into every error."""
    n = len(raw.rewards)
    lengths = {
        "observations": _leaf_length(raw.observations) - 1,
        "actions": _leaf_length(raw.actions),
        "terminations": len(raw.terminations),
        "truncations": len(raw.truncations),
    }
    for part, length in lengths.items():
        if length != n:
            raise ConfigError(
                f"{name}: {n} rewards but {length} {part} (observations: one more, the reset's)"
            )
    if n == 0:
        raise ConfigError(f"{name}: holds no step")
    ends = np.asarray(raw.terminations, bool), np.asarray(raw.truncations, bool)
    for flag, done in zip(("terminated", "truncated"), ends):
        if done[:-1].any():
            t = int(np.flatnonzero(done[:-1])[0]) + 1
            raise ConfigError(f"{name}: {flag} at step {t} of {n}, before its last step")
    if not (ends[0][-1] or ends[1][-1]):
        raise ConfigError(
            f"{name}: its last step is neither terminated nor truncated, so where it ended is unknown"
        )
    try:
        frames = [obs_converter(_at(raw.observations, t)) for t in range(n + 1)]
    except ValueError as e:  # a discrete observation outside its space
        raise ConfigError(f"{name}: {e}") from None
    obs = {k: np.stack([f[k] for f in frames]) for k in obs_converter.spaces}
    actions = agent_actions(act_converter, np.asarray(raw.actions))
    # Terminated wins where both are set: gymnasium reports a terminal state reached on a
    # time limit's last step as both.
    return steps_from_transitions(obs, actions, np.asarray(raw.rewards), bool(ends[0][-1]))
