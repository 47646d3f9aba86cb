"""Atari 2600 games (``atari:<game>``) through ale-py, preprocessed as DreamerV3 does.

Game names are the official DreamerV3 ones (``atari_pong`` -> ``atari:pong``,
``atari_ms_pacman`` -> ``atari:ms_pacman``): ALE ROM ids, mapped to the gymnasium ids
ale-py registers (``ALE/MsPacman-v5``). The ALE env runs at one emulator frame per
step and ``gymnasium.wrappers.AtariPreprocessing`` does the standard preprocessing in
one place: random no-ops at reset (``env.atari.noops``), action repeat with a max over
the last two frames (``env.atari.repeat``; the max removes the flicker of sprites
drawn on alternate frames), a square resize (``env.atari.size``) and optional
grayscale (``env.atari.gray``, kept as ``uint8 [H, W, 1]``). Sticky actions
(``env.atari.sticky``: the previous action repeats with p=0.25) and the action set
(``env.atari.actions``) are ALE settings. A life lost does not end the episode; a game
over is ``is_last`` and ``is_terminal``, and ALE v5's limit of 108,000 frames (30
minutes of play) is a truncation, ``is_last`` only.

The preprocessed env goes behind :class:`~dreamrl.envs.gym_adapter.GymEnv`, which gives
the step-dict contract, seeding and the converters; its own repeat stays 1 because
the preprocessing already repeats.
"""

from __future__ import annotations

import difflib
from typing import Any, SupportsFloat

import gymnasium
import numpy as np

from dreamrl.config import AtariConfig, Config, ConfigError
from dreamrl.envs.gym_adapter import GymEnv

# ALE v5's episode limit in emulator frames: 30 minutes of play at 60 frames a second.
MAX_FRAMES = 108_000

# The official DreamerV3 spells this game with an underscore; the ROM id has none.
_ALIASES = {"james_bond": "jamesbond"}

# ROMs whose only mode is multi-player: ale-py registers no v5 env for them.
_MULTIPLAYER = {"combat", "joust", "maze_craze", "warlords"}

ACTION_SETS = ("all", "needed")


def make(name: str, config: Config, seed: int | None, mode: str) -> GymEnv:
    """The Atari game ``name`` as ``config.env.atari`` sets it up.

    ``mode`` ('train' or 'eval') changes nothing: DreamerV3 evaluates on the same
    sticky, no-op-started games it trains on.
    """
    del mode
    return build(name, config.env.atari, seed)


def build(game: str, atari: AtariConfig, seed: int | None, max_frames: int = MAX_FRAMES) -> GymEnv:
    """``make`` with the episode limit exposed (``max_frames`` emulator frames), so tests
    can reach a truncation in a few steps."""
    env_id = _env_id(game)
    size = tuple(atari.size)
    if len(size) != 2 or size[0] != size[1] or size[0] <= 0:
        raise ConfigError(
            f"env.atari.size: {size!r} is out of range; allowed: a square (N, N) with N > 0 "
            "(AtariPreprocessing resizes to squares)"
        )
    if atari.actions not in ACTION_SETS:
        raise ConfigError(
            f"env.atari.actions: {atari.actions!r} is out of range; allowed: 'all' (the full 18 "
            "actions) or 'needed' (the game's minimal set)"
        )
    if atari.repeat < 1:
        raise ConfigError(f"env.atari.repeat: {atari.repeat!r} is out of range; allowed: 1 or more")
    if atari.noops < 0:
        raise ConfigError(f"env.atari.noops: {atari.noops!r} is out of range; allowed: 0 or more")
    env = gymnasium.make(
        env_id,
        frameskip=1,  # AtariPreprocessing repeats (and max-pools) instead
        repeat_action_probability=0.25 if atari.sticky else 0.0,
        full_action_space=atari.actions == "all",
        max_num_frames_per_episode=max_frames,
    )
    try:
        env = gymnasium.wrappers.AtariPreprocessing(
            env,
            noop_max=atari.noops,
            frame_skip=atari.repeat,
            screen_size=int(size[0]),
            terminal_on_life_loss=False,
            grayscale_obs=atari.gray,
            grayscale_newaxis=True,  # [H, W, 1]: the encoder reads images with a channel axis
            scale_obs=False,  # uint8 frames: the replay buffer stores bytes
        )
    except gymnasium.error.DependencyNotInstalled as e:  # opencv, for the resize
        env.close()
        raise ConfigError(f"atari:{game}: {e}; run pip install 'dreamrl[atari]'") from None
    return GymEnv(_ValidActions(env, game), (int(size[0]), int(size[1])), pixels=False, repeat=1, seed=seed)


def _env_id(game: str) -> str:
    """The gymnasium id of ``game`` (``ms_pacman`` -> ``ALE/MsPacman-v5``), after
    registering ale-py's envs; ConfigError for a missing ale-py or an unknown game."""
    try:
        import ale_py
        from ale_py.registration import rom_id_to_name
    except ImportError:
        raise ConfigError(
            f"atari:{game}: ale-py is not installed; run pip install 'dreamrl[atari]'"
        ) from None
    gymnasium.register_envs(ale_py)
    rom = _ALIASES.get(game.lower(), game.lower())
    games = sorted(set(ale_py.roms.get_all_rom_ids()) - _MULTIPLAYER)
    if rom not in games:
        close = difflib.get_close_matches(rom, games, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"atari:{game}: {game!r} is not an Atari game ale-py knows; {hint}"
            f"games are ALE ROM ids in lower case with underscores: {', '.join(games)}"
        )
    return f"ALE/{rom_id_to_name(rom)}-v5"


class _ValidActions(gymnasium.Wrapper):
    """Refuses actions outside the action set: ALE indexes its action list with the
    action, so a negative one would silently wrap around to another action."""

    def __init__(self, env: gymnasium.Env, game: str):
        super().__init__(env)
        assert isinstance(env.action_space, gymnasium.spaces.Discrete)
        self.game = game
        self.n = int(env.action_space.n)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if not (isinstance(action, (int, np.integer)) and 0 <= action < self.n):
            raise ValueError(
                f"atari:{self.game}: action {action!r} is out of range; allowed: 0 to {self.n - 1}"
            )
        return self.env.step(action)
