"""A dreamrl run dir's replay as a dataset: every episode its chunk files still hold.

The chunk files (``replay/{stream}-{start}-{length}.npz``) are read per stream, in order;
each stretch of contiguous chunks is cut into episodes at ``is_first``. What does not
make a whole episode is handled as training would: steps before a stretch's first
``is_first`` (their episode began in a chunk no longer kept) are left out, and an
episode cut off without its end (a run stopped and resumed on fresh episodes, or the
recording's last, unfinished one) ends there as a truncation, ``is_last`` without
``is_terminal``. The spaces, and how the env's observations map to them, are those of
the run's newest checkpoint; the env is the one its ``config.json`` names.
"""

from __future__ import annotations

import collections
import itertools
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dreamrl import config as cfglib
from dreamrl.config import Config, ConfigError, EnvConfig
from dreamrl.datasets.base import Episode
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.replay import CHUNK_NAME
from dreamrl.rundir import AGENT_META, REPLAY, RunDir
from dreamrl.spaces import Space, replay_spaces


def is_replay_dir(path: Path) -> bool:
    """Whether ``path`` is a dreamrl run dir (or the ``replay/`` folder of one)."""
    if path.name == REPLAY and RunDir(path.parent).config.is_file():
        return True
    return RunDir(path).config.is_file() and RunDir(path).replay.is_dir()


class ReplayDir:
    """The episodes held by the replay chunks of the run dir ``path``."""

    def __init__(self, source: str):
        from dreamrl.run.checkpoint import latest_checkpoint

        path = Path(source).expanduser()
        in_run = path.name == REPLAY and RunDir(path.parent).config.is_file()
        self.run = RunDir(path.parent if in_run else path)
        self.source = source
        try:
            self.config: Config = cfglib.from_dict(json.loads(self.run.config.read_text()))
        except (OSError, ValueError) as e:
            raise ConfigError(f"--dataset {source}: its {self.run.config.name} is unreadable ({e})") from None
        ckpt = latest_checkpoint(self.run.path)
        if ckpt is None:
            raise ConfigError(
                f"--dataset {source}: holds no checkpoint that verifies, and its checkpoint's agent.json "
                "is what says the replay's spaces"
            )
        meta = json.loads((ckpt / AGENT_META).read_text())
        self.obs_space: dict[str, Space] = {k: Space.from_json(v) for k, v in meta["obs_space"].items()}
        self.act_space: Space = Space.from_json(meta["act_space"])
        self.obs_converter: ObsConverter | None = (
            ObsConverter.from_json(meta["obs_converter"]) if meta.get("obs_converter") else None
        )
        self.act_converter: ActionConverter | None = (
            ActionConverter.from_json(meta["act_converter"]) if meta.get("act_converter") else None
        )
        self._notes: list[str] = []
        self._chunks = self._list_chunks()
        if not self._chunks:
            raise ConfigError(f"--dataset {source}: {self.run.replay} holds no replay chunk")

    @property
    def env_id(self) -> str | None:
        return self.config.task or None

    def _list_chunks(self) -> dict[int, list[tuple[Path, int, int]]]:
        by_stream: dict[int, list[tuple[Path, int, int]]] = collections.defaultdict(list)
        if self.run.replay.is_dir():
            for path in self.run.replay.iterdir():
                m = CHUNK_NAME.match(path.name)
                if m:
                    by_stream[int(m[1])].append((path, int(m[2]), int(m[3])))
        return {s: sorted(chunks, key=lambda c: c[1]) for s, chunks in sorted(by_stream.items())}

    def max_steps(self) -> int:
        return sum(size for chunks in self._chunks.values() for _, _, size in chunks)

    def notes(self) -> list[str]:
        return list(self._notes)

    def hint(self, env_config: EnvConfig) -> str:
        changed = cfglib.diff(self.config.env, env_config)
        if not changed:
            return ""
        parts = [f"env.{k}={old!r}" for k, (old, _) in changed.items()]
        return f"the dataset's run was made with {', '.join(parts)}"

    def episodes(self) -> Iterator[Episode]:
        self._notes = []
        for stream, chunks in self._chunks.items():
            for stretch in _contiguous(chunks):
                yield from self._stretch_episodes(stream, stretch)

    def _stretch_episodes(self, stream: int, stretch: list[tuple[Path, int, int]]) -> Iterator[Episode]:
        """The episodes of one run of contiguous chunks of ``stream``."""
        keys = replay_spaces(self.obs_space, self.act_space)
        parts = [self._read(path, size, keys) for path, _, size in stretch]
        steps = {k: np.concatenate([p[k] for p in parts]) for k in keys}
        del parts
        offset = stretch[0][1]
        where = f"dataset {self.source}, stream {stream}"
        firsts = np.flatnonzero(steps["is_first"])
        lead = int(firsts[0]) if len(firsts) else len(steps["is_first"])
        if lead:
            self._notes.append(
                f"{where}: left out steps {offset:,}-{offset + lead - 1:,}, whose episode began before "
                "the oldest chunk kept"
            )
        bounds = [*firsts.tolist(), len(steps["is_first"])]
        for start, end in itertools.pairwise(bounds):
            lasts = np.flatnonzero(steps["is_last"][start:end])
            stop = start + int(lasts[0]) + 1 if len(lasts) else end
            name = f"{where}, steps {offset + start:,}-{offset + stop - 1:,}"
            if stop < end:
                raise ConfigError(
                    f"{name}: step {offset + stop:,} follows the episode's is_last without is_first"
                )
            episode = {k: v[start:stop].copy() for k, v in steps.items()}
            if not len(lasts):
                episode["is_last"][-1] = True  # cut off: it ends here as a truncation
                self._notes.append(f"{name}: ended without is_last (cut off); read as truncated there")
            if stop - start < 2:
                self._notes.append(f"{name}: a lone reset step, left out")
                continue
            yield Episode(name, episode)

    def _read(self, path: Path, size: int, spaces: dict[str, Space]) -> dict[str, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k][:size] for k in spaces}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise ConfigError(f"dataset {self.source}: replay chunk {path} is unreadable ({e})") from None
        for key, array in arrays.items():
            space = spaces[key]
            if len(array) != size or array.shape[1:] != space.shape or array.dtype != np.dtype(space.dtype):
                raise ConfigError(
                    f"dataset {self.source}: replay chunk {path.name} holds {key!r} as "
                    f"{array.dtype}{list(array.shape)}, expected {size} steps of "
                    f"{space.dtype}{list(space.shape)}"
                )
        return arrays


def _contiguous(chunks: list[tuple[Path, int, int]]) -> Iterator[list[tuple[Path, int, int]]]:
    """``chunks`` (sorted by start) split where one does not begin where the last ended."""
    stretch: list[tuple[Path, int, int]] = []
    for chunk in chunks:
        if stretch and chunk[1] != stretch[-1][1] + stretch[-1][2]:
            yield stretch
            stretch = []
        stretch.append(chunk)
    if stretch:
        yield stretch
