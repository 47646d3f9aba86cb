"""A pool of environments stepped together, in this process or one worker process each.

The pool resets each env when needed: an env whose last step ended its episode
(``is_last``) is reset on the next call instead of stepped, so every call returns one
step dict per env, stacked ``{key: [N, ...]}``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dreamrl.envs.gym_adapter import ActionConverter, GymEnv, ObsConverter, Step
from dreamrl.envs.spaces import Space

EnvFactory = Callable[[], GymEnv]


class EnvError(RuntimeError):
    """An environment raised; the message names its index and the original error."""


def stack(steps: Sequence[Step]) -> dict[str, np.ndarray]:
    """List of step dicts -> dict of arrays with a leading env axis."""
    return {k: np.stack([s[k] for s in steps]) for k in steps[0]}


def _worker(factory: EnvFactory, conn: Any) -> None:
    env = None
    try:
        env = factory()
        conn.send(("ok", (env.obs_converter, env.act_converter)))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                conn.send(("ok", env.reset()))
            elif cmd == "step":
                conn.send(("ok", env.step(arg)))
            elif cmd == "close":
                break
    except (KeyboardInterrupt, EOFError):
        pass
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        if env is not None:
            env.close()
        conn.close()


class _ProcessEnv:
    """A GymEnv living in its own process, spoken to over a pipe."""

    def __init__(self, factory: EnvFactory, index: int):
        ctx = mp.get_context("spawn")
        self.index = index
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(factory, child), daemon=True)
        self.proc.start()
        child.close()
        self.obs_converter, self.act_converter = self._receive()

    def _receive(self) -> Any:
        try:
            status, payload = self.conn.recv()
        except EOFError:
            raise EnvError(f"env {self.index}: worker process died") from None
        if status == "error":
            raise EnvError(f"env {self.index} raised: {payload}")
        return payload

    def send(self, cmd: str, arg: Any = None) -> None:
        self.conn.send((cmd, arg))

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(("close", None))
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()


class EnvPool:
    """``N`` envs stepped together. ``workers='process'`` runs each in its own process
    (envs step in parallel); ``'inline'`` steps them one after another here."""

    def __init__(self, factories: Sequence[EnvFactory], workers: str = "inline"):
        if workers not in ("inline", "process"):
            raise ValueError(f"workers must be 'inline' or 'process', not {workers!r}")
        self.parallel = workers == "process" and len(factories) > 1
        if self.parallel:
            self._procs = [_ProcessEnv(f, i) for i, f in enumerate(factories)]
            first: Any = self._procs[0]
        else:
            self._envs = [f() for f in factories]
            first = self._envs[0]
        self.obs_converter: ObsConverter = first.obs_converter
        self.act_converter: ActionConverter = first.act_converter
        self.obs_space: dict[str, Space] = self.obs_converter.spaces
        self.act_space: Space = self.act_converter.space
        self.size = len(factories)
        self._needs_reset = np.ones(self.size, bool)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step every env with its action (ignored for envs being reset)."""
        reset = self._needs_reset.copy()
        if self.parallel:
            for i, proc in enumerate(self._procs):
                proc.send("reset" if reset[i] else "step", None if reset[i] else actions[i])
            steps = [proc._receive() for proc in self._procs]
        else:
            steps = []
            for i, env in enumerate(self._envs):
                try:
                    steps.append(env.reset() if reset[i] else env.step(actions[i]))
                except Exception as e:
                    raise EnvError(f"env {i} raised {type(e).__name__}: {e}") from e
        out = stack(steps)
        self._needs_reset = out["is_last"].astype(bool)
        return out

    def close(self) -> None:
        if self.parallel:
            for proc in self._procs:
                proc.close()
        else:
            for env in self._envs:
                env.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
