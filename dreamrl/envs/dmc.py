"""DeepMind Control suite tasks behind dreamrl's env contract: ``dmc:<domain>_<task>``.

Observations are the task's proprioceptive vectors (one key each, as the suite names
them) and/or a 64x64 RGB camera image, as ``env.dmc.proprio`` and ``env.dmc.image``
say (the ``dmc_vision`` preset turns proprio off, ``dmc_proprio`` turns the image off).
Actions are the suite's bounded vectors, driven from dreamrl's [-1, 1].

Rendering is headless. MuJoCo's GL backend is chosen here, when the first env is made,
never at import: ``MUJOCO_GL`` if the user set it, else EGL where a GPU driver answers,
else OSMesa (software, Debian's libosmesa6).

``env.dmc.fast_render`` turns off shadows and reflections, which take most of a
software renderer's time (objects then cast no shadow, the floor mirrors nothing).

Suite episodes end by their time limit (1,000 physics steps): that is a truncation,
``is_last`` without ``is_terminal``; a zero discount from the task is a terminal state.

Visual distractors, for testing whether a model overfits visuals: ``color`` paints the
background (every pixel the segmentation render leaves to the skybox) one random
colour per episode; ``noise`` paints it with smooth random noise that drifts every step.
They change pixels only: physics, rewards and proprio vectors are untouched.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from dreamrl.config import Config, ConfigError
from dreamrl.envs.base import SpacesFromConverters, Step, pack
from dreamrl.envs.convert import ActionConverter, ObsConverter, ObsEntry, resize_image

DEFAULT_CAMERAS = {"quadruped": 2}
ALIASES = {"cup": "ball_in_cup"}


def select_gl_backend() -> str:
    """Set ``MUJOCO_GL`` for this process if the user has not: EGL if it can make a
    context, else OSMesa. Returns the backend in use."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    for backend in ("egl", "osmesa"):
        if _backend_works(backend):
            os.environ["MUJOCO_GL"] = backend
            return backend
    raise ConfigError(
        "dmc: no headless OpenGL found for MuJoCo; install Debian's libosmesa6 (software) "
        "or libegl1 with a GPU driver, or set MUJOCO_GL"
    )


def _backend_works(backend: str) -> bool:
    """Whether a GL context of ``backend`` can be created, probed in a subprocess so a
    failing driver cannot take this process down."""
    import subprocess
    import sys

    probe = "from mujoco import GLContext; c = GLContext(8, 8); c.make_current(); c.free()"
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def parse_task(name: str) -> tuple[str, str]:
    """``'cartpole_balance' -> ('cartpole', 'balance')``, checked against the suite."""
    from dm_control import suite

    tasks = set(suite.ALL_TASKS)
    for domain, task in sorted(tasks, key=lambda x: -len(x[0])):
        for alias, full in ALIASES.items():
            if full == domain and name.startswith(alias + "_") and name[len(alias) + 1 :] == task:
                return domain, task
        if name == f"{domain}_{task}":
            return domain, task
    known = ", ".join(f"{d}_{t}" for d, t in sorted(tasks))
    raise ConfigError(f"--env dmc:{name}: not a DeepMind Control suite task; known: {known}")


def make(name: str, config: Config, seed: int | None, mode: str) -> DMCEnv:
    """Build ``dmc:<name>`` as training (``mode='train'``) or evaluation uses it."""
    import importlib.util

    if importlib.util.find_spec("dm_control") is None:
        raise ConfigError("--env dmc:...: dm_control is not installed (pip install 'dreamrl[dmc]')")
    cfg = config.env.dmc
    if not (cfg.image or cfg.proprio):
        raise ConfigError("env.dmc.image and env.dmc.proprio are both false: the model would see nothing")
    # dm_control reads MUJOCO_GL when it is first imported: choose the backend first.
    select_gl_backend()
    if cfg.fast_render:
        # Mesa's software rasteriser splits each frame among threads; a 64x64 frame without
        # shadow passes is too small to gain from that, and the threads would compete with
        # training for the cores. One thread measured 16% faster here (docs/performance.md).
        # Read when the process's first GL context is made; a user's setting wins.
        os.environ.setdefault("LP_NUM_THREADS", "0")
    domain, task = parse_task(name)
    from dm_control import suite

    env = suite.load(domain, task, task_kwargs={"random": seed})
    camera = DEFAULT_CAMERAS.get(domain, 0) if cfg.camera == -1 else cfg.camera
    distractor = cfg.eval_distractor if mode == "eval" else cfg.distractor
    size = (int(config.env.size[0]), int(config.env.size[1]))
    return DMCEnv(
        env, size, cfg.image, cfg.proprio, camera, config.env.repeat, distractor, seed, cfg.fast_render
    )


class DMCEnv(SpacesFromConverters):
    """One dm_control environment speaking step dicts."""

    def __init__(
        self,
        env: Any,
        size: tuple[int, int],
        image: bool = True,
        proprio: bool = True,
        camera: int = 0,
        repeat: int = 1,
        distractor: str = "none",
        seed: int | None = None,
        fast_render: bool = False,
    ):
        self.env = env
        self.size = size
        self.camera = camera
        self.repeat = repeat
        self.image = image
        # Shadows and reflections take most of a software renderer's time at 64x64.
        self.render_flags = {"shadow": False, "reflection": False} if fast_render else None
        self.distractor = Distractor(distractor, size, seed) if image and distractor != "none" else None
        entries = []
        if proprio:
            for key, spec in env.observation_spec().items():
                entries.append(ObsEntry(key, (key,), "vector", (max(1, int(np.prod(spec.shape))),)))
        if image:
            entries.append(ObsEntry("image", (), "render", (*size, 3)))
        self.obs_converter = ObsConverter(entries, size)
        spec = env.action_spec()
        low = np.asarray(spec.minimum, np.float64).flatten()
        high = np.asarray(spec.maximum, np.float64).flatten()
        self.act_converter = ActionConverter(0, low, high, tuple(spec.shape))

    def render(self) -> np.ndarray:
        """The camera image ``uint8 [H, W, 3]``, with the distractor painted in."""
        physics = self.env.physics
        h, w = self.size
        frame = physics.render(h, w, camera_id=self.camera, render_flag_overrides=self.render_flags)
        if self.distractor is not None:
            segmentation = physics.render(h, w, camera_id=self.camera, segmentation=True)
            frame = self.distractor.paint(frame, segmentation[..., 0] == -1)
        return frame

    def _obs(self, time_step: Any) -> dict[str, np.ndarray]:
        render = self.render() if self.image else None
        return self.obs_converter(time_step.observation, render)

    def reset(self, seed: int | None = None) -> Step:
        if seed is not None:
            self.env.task.random.seed(seed)
            if self.distractor is not None:
                self.distractor.seed(seed)
        if self.distractor is not None:
            self.distractor.new_episode()
        return pack(self._obs(self.env.reset()), 0.0, True, False, False)

    def step(self, action: Any) -> Step:
        env_action = self.act_converter(action)
        reward = 0.0
        for _ in range(self.repeat):
            time_step = self.env.step(env_action)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        if self.distractor is not None:
            self.distractor.advance()
        last = bool(time_step.last())
        terminal = last and float(time_step.discount) == 0.0
        return pack(self._obs(time_step), reward, False, last, terminal)

    def close(self) -> None:
        # Free the GL context now rather than in an atexit hook that races the
        # renderer's shutdown.
        self.env.close()


class Distractor:
    """Background painter: a random colour per episode, or drifting smooth noise."""

    def __init__(self, kind: str, size: tuple[int, int], seed: int | None):
        if kind not in ("color", "noise"):
            raise ConfigError(f"env.dmc.distractor: {kind!r} is not one of 'none', 'color', 'noise'")
        self.kind = kind
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.background = np.zeros((*size, 3), np.uint8)
        self._field = np.zeros((2 * size[0], 2 * size[1], 3), np.uint8)
        self._offset = np.zeros(2)
        self._velocity = np.zeros(2)

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def new_episode(self) -> None:
        h, w = self.size
        if self.kind == "color":
            self.background[:] = self.rng.integers(0, 256, 3, dtype=np.uint8)
            return
        # Smooth noise: coarse random values upsampled to twice the frame, so a
        # frame-sized window can drift across it.
        coarse = self.rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
        self._field = resize_image(coarse, (2 * h, 2 * w))
        self._offset = self.rng.uniform(0, [h, w])
        angle = self.rng.uniform(0, 2 * np.pi)
        self._velocity = 1.5 * np.array([np.sin(angle), np.cos(angle)])
        self._crop()

    def advance(self) -> None:
        if self.kind == "noise":
            self._offset = (self._offset + self._velocity) % np.array(self.size)
            self._crop()

    def _crop(self) -> None:
        y, x = (int(v) for v in self._offset)
        h, w = self.size
        self.background[:] = self._field[y : y + h, x : x + w]

    def paint(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``frame`` with the pixels where ``mask`` holds replaced by the background."""
        out = frame.copy()
        out[mask] = self.background[mask]
        return out
