"""Datasets a run learns from without stepping an env (``dreamrl train --dataset``).

:func:`open_dataset` reads either kind behind one :class:`~.base.Dataset` interface:
a dreamrl run dir, whose replay chunks hold every episode it still keeps
(:mod:`.replay_dir`), or a Minari dataset, by id or by directory (:mod:`.minari_data`).
:mod:`.checks` holds what each must pass before a run learns from it.
"""

from __future__ import annotations

from pathlib import Path

from dreamrl.config import Config
from dreamrl.datasets.base import Dataset, Episode

__all__ = ["Dataset", "Episode", "open_dataset"]


def open_dataset(source: str, config: Config) -> Dataset:
    """The dataset ``source`` names (a run dir, a Minari directory or id), its
    observations read at ``config.env.size`` where they are images. Reads metadata
    only: episodes are read when iterated."""
    from dreamrl.datasets.replay_dir import ReplayDir, is_replay_dir

    if is_replay_dir(Path(source).expanduser()):
        return ReplayDir(source)
    from dreamrl.datasets.minari_data import MinariData

    size = (int(config.env.size[0]), int(config.env.size[1]))
    return MinariData(source, size)
