"""A pool of environments stepped together, in this process or one worker process each.

The pool resets each env when needed: an env whose last step ended its episode
(``is_last``) is reset on the next call instead of stepped, so every call returns one
step dict per env, stacked ``{key: [N, ...]}``.

Envs crash and hang (simulators segfault, lose their display, deadlock), and a long
run should not die of one bad episode. So an env that raises, whose worker process
dies, or (process mode only) that takes longer than ``timeout`` seconds to answer one
reset or step, is rebuilt from its factory in a fresh worker. Its episode is cut
short: the call returns its last good observation with reward 0, ``is_last`` and not
``is_terminal`` (a truncation, so value targets still bootstrap from it), and the next
call resets the new env as after any ``is_last``. A failure during a reset has no
observation to end on, so the reset is retried on the new env within the same call.

Restarts are budgeted: more than ``restarts`` failures of one env within ``window``
seconds raise :class:`EnvError` naming the env, the count and the original error, so
an env that is simply broken stops the run instead of restarting forever. After an
``EnvError`` the pool should only be closed.

A restarted env is built by the same factory, so it gets the same seed as the env it
replaces: with :class:`~dreamrl.envs.gym_adapter.GymEnv` (seeded on its first reset
only) the first episode after a restart replays the env's first episode, and later
resets continue its random stream. That costs a little episode diversity once per
restart and keeps factories simple (no reseeding protocol); the restart budget bounds
how often it can happen.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import connection
from typing import Any

import numpy as np

from dreamrl.config import ConfigError
from dreamrl.envs.base import Env, Step, pack
from dreamrl.envs.convert import ActionConverter, ObsConverter
from dreamrl.spaces import Space

EnvFactory = Callable[[], Env]

# Starting a worker spawns a Python interpreter, imports the env's modules and builds
# the env: that can take far longer than a step, so it gets at least this many seconds.
STARTUP_TIMEOUT = 60.0


class EnvError(RuntimeError):
    """An environment failed beyond what restarting it can fix; the message names its
    index and the original error."""


class ReplayMismatchError(RuntimeError):
    """A replayed episode did not reproduce the stored observations."""


class _WorkerError(Exception):
    """One failure of one env (it raised, its worker died or hung): the message is the
    original error's text, ``cause`` the exception where it was raised in this process."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


def stack(steps: Sequence[Step]) -> dict[str, np.ndarray]:
    """List of step dicts -> dict of arrays with a leading env axis."""
    return {k: np.stack([s[k] for s in steps]) for k in steps[0]}


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _describe(e: BaseException) -> str:
    """The error's first line as ``Type: message``, then its traceback, for the log."""
    return f"{type(e).__name__}: {e}\n{traceback.format_exc()}"


def _worker(factory: EnvFactory, conn: Any) -> None:
    env = None
    try:
        try:
            env = factory()
        except ConfigError as e:
            # The settings are wrong, not the env: the parent reports it as the config error it is.
            conn.send(("config_error", str(e)))
            return
        conn.send(("ok", (env.obs_converter, env.act_converter)))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                conn.send(("ok", env.reset(seed=arg)))
            elif cmd == "step":
                conn.send(("ok", env.step(arg)))
            elif cmd == "close":
                break
    except (KeyboardInterrupt, EOFError):
        pass
    except BaseException as e:
        with contextlib.suppress(OSError):
            conn.send(("error", _describe(e)))
    finally:
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
        conn.close()


class _ProcessEnv:
    """An env living in its own process, spoken to over a pipe.

    :meth:`receive` waits on the pipe *and* the process sentinel, so a worker that dies
    is noticed at once even when a child process of the env (a simulator it launched)
    inherited the pipe and keeps it open.
    """

    obs_converter: ObsConverter
    act_converter: ActionConverter

    def __init__(self, factory: EnvFactory, index: int):
        ctx = mp.get_context("spawn")
        self.index = index
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker, args=(factory, child), daemon=True, name=f"dreamrl-env-{index}"
        )
        self.proc.start()
        child.close()

    def handshake(self, timeout: float) -> None:
        """Wait for the worker to build its env and report the converters."""
        limit = max(timeout, STARTUP_TIMEOUT) if timeout > 0 else 0.0
        deadline = time.monotonic() + limit if limit > 0 else None
        self.obs_converter, self.act_converter = self.receive(deadline, limit)

    def send(self, cmd: str, arg: Any = None) -> None:
        try:
            self.conn.send((cmd, arg))
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            raise _WorkerError(self._death()) from None

    def receive(self, deadline: float | None, limit: float) -> Any:
        """The worker's answer, or :class:`_WorkerError` if it raised, died, or gave
        none by ``deadline`` (``time.monotonic()`` seconds; ``None`` waits forever)."""
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not connection.wait([self.conn, self.proc.sentinel], remaining):
            raise _WorkerError(f"timed out after {limit:g} s")
        if not self.conn.poll(0):
            raise _WorkerError(self._death())
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            raise _WorkerError(self._death()) from None
        if status == "error":
            raise _WorkerError(payload)
        if status == "config_error":
            raise ConfigError(payload)
        return payload

    def _death(self) -> str:
        self.proc.join(timeout=1.0)
        if self.proc.exitcode is None:
            return "worker process closed its pipe but is still running"
        return f"worker process died with exit code {self.proc.exitcode}"

    def kill(self) -> None:
        """End the worker now, whatever it is doing (a hung env ignores requests)."""
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=1.0)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc.join(timeout=1.0)
        self.conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("close", None))
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=1.0)
        self.conn.close()


class _InlineEnv:
    """An env in this process behind the same interface as a worker.

    ``handshake`` builds the env (unless it was handed one), ``send`` runs the call at
    once and ``receive`` hands over its result or its exception. A call that never
    returns blocks the whole pool: hangs cannot be detected inline, only in process mode.
    """

    obs_converter: ObsConverter
    act_converter: ActionConverter

    def __init__(self, factory: EnvFactory, env: Env | None = None):
        self.factory = factory
        self.env = env
        self._closed = False
        self._result: Step | _WorkerError | None = None
        if env is not None:
            self.obs_converter, self.act_converter = env.obs_converter, env.act_converter

    def handshake(self, timeout: float) -> None:
        if self.env is None:
            try:
                self.env = self.factory()
            except Exception as e:
                raise _WorkerError(_describe(e), e) from e
            self.obs_converter, self.act_converter = self.env.obs_converter, self.env.act_converter

    def send(self, cmd: str, arg: Any = None) -> None:
        assert self.env is not None, "handshake first"
        try:
            self._result = self.env.reset(seed=arg) if cmd == "reset" else self.env.step(arg)
        except Exception as e:
            self._result = _WorkerError(_describe(e), e)

    def receive(self, deadline: float | None, limit: float) -> Any:
        result, self._result = self._result, None
        if isinstance(result, _WorkerError):
            raise result
        return result

    def kill(self) -> None:
        if not self._closed and self.env is not None:
            with contextlib.suppress(Exception):  # a broken env may fail to close too
                self.env.close()
        self._closed = True

    def close(self) -> None:
        if not self._closed and self.env is not None:
            self.env.close()
        self._closed = True


_Slot = _ProcessEnv | _InlineEnv


class EnvHandle:
    """One env in a worker process (``workers='process'``) or in this process, behind
    the calls evaluation makes. A step is sent, then waited for, so that several envs
    step at once. There are no restarts: a worker's failure raises :class:`EnvError`
    naming the env, an inline env's error is raised as it is. Evaluation runs its envs
    this way so that the trainer never loads a simulator and its renderer (DMC's MuJoCo
    and Mesa stay resident once loaded, about 200 MB)."""

    def __init__(self, factory: EnvFactory, index: int, workers: str = "inline", timeout: float = 60.0):
        self.index = index
        self.timeout = float(timeout)
        self._slot: _Slot = _ProcessEnv(factory, index) if workers == "process" else _InlineEnv(factory)

    def start(self) -> None:
        """Wait for the env to be built (a bad config raises its ConfigError here)."""
        self._call(lambda: self._slot.handshake(self.timeout), "could not start")

    def reset(self, seed: int | None) -> Step:
        self._call(lambda: self._slot.send("reset", seed), "failed")
        return self.wait()

    def send_step(self, action: np.ndarray) -> None:
        self._call(lambda: self._slot.send("step", action), "failed")

    def wait(self) -> Step:
        limit = self.timeout
        deadline = time.monotonic() + limit if limit > 0 else None
        return self._call(lambda: self._slot.receive(deadline, limit), "failed")  # type: ignore[no-any-return]

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return fn()
        except _WorkerError as e:
            self._slot.kill()
            if e.cause is not None:  # raised in this process: as it was, as an inline env always did
                raise e.cause from None
            raise EnvError(f"evaluation env {self.index} {what}: {e}") from None

    def close(self) -> None:
        self._slot.close()


@dataclass(frozen=True)
class FailureBudget:
    """How much failing one env may do before the run stops (``run.env_*`` settings).

    Counted in the env's own calls (resets and steps), never in seconds: an env that
    fails once every few hundred steps is restarted for as long as the run lasts, while
    one that cannot get going stops the run within a few calls.
    """

    crash_loop: int = 5  # failures in a row, each within crash_steps calls of the restart
    crash_steps: int = 10
    rate: float = 0.02  # largest share of the last `window` calls that may fail
    window: int = 1000

    def verdict(self, health: EnvHealth) -> str | None:
        """Why ``health`` stops the run (a phrase to follow "env i"), or None."""
        if health.streak >= self.crash_loop:
            return (
                f"failed {health.streak} times in a row, each before it completed "
                f"{self.crash_steps} calls since its restart: a crash loop (run.env_crash_loop="
                f"{self.crash_loop}, run.env_crash_steps={self.crash_steps})"
            )
        recent = health.failures_within(self.window)
        if recent > self.rate * self.window:
            return (
                f"failed {recent} times in its last {self.window:,} calls, more than "
                f"{self.rate:g} of them (run.env_failure_rate={self.rate:g}, "
                f"run.env_failure_window={self.window})"
            )
        return None


class EnvHealth:
    """One env's record: calls completed, failures, and how recent they were."""

    def __init__(self) -> None:
        self.calls = 0  # resets and steps answered
        self.failures = 0
        self.streak = 0  # failures in a row, each soon after the previous restart
        self.since_restart = 0  # calls answered since the last restart (or the start)
        self._failed_at: collections.deque[int] = collections.deque()  # `calls` at each failure

    def completed(self) -> None:
        self.calls += 1
        self.since_restart += 1

    def failed(self, crash_steps: int) -> None:
        """Count a failure; it extends the streak if it came within ``crash_steps`` calls."""
        self.streak = self.streak + 1 if self.since_restart < crash_steps else 1
        self.failures += 1
        self.since_restart = 0
        self._failed_at.append(self.calls)

    def failures_within(self, window: int) -> int:
        """Failures during the last ``window`` calls."""
        while self._failed_at and self._failed_at[0] < self.calls - window:
            self._failed_at.popleft()
        return len(self._failed_at)


class EnvPool:
    """``N`` envs stepped together. ``workers='process'`` runs each in its own process
    (envs step in parallel); ``'inline'`` steps them one after another here, as does a
    pool of one env.

    ``timeout`` (seconds, process mode; 0 disables) is how long one reset or step may
    take before its worker counts as hung. A failed env (raised, died or hung) is
    restarted, and failures are budgeted against progress, not wall time, so a faster run
    is no likelier to stop (:class:`FailureBudget`): :class:`EnvError` stops the run when
    one env is in a crash loop (``budget.crash_loop`` failures in a row, each before it
    completed ``budget.crash_steps`` calls since its restart) or fails too often (more
    than ``budget.rate`` of its last ``budget.window`` calls). The attribute ``restarts``
    counts every restart so far, and ``last_errors`` collects one log line per restart,
    for the caller to print and clear.
    """

    def __init__(
        self,
        factories: Sequence[EnvFactory],
        workers: str = "inline",
        timeout: float = 60.0,
        budget: FailureBudget | None = None,
        episode_seed: Callable[[int, int], int] | None = None,
    ):
        if workers not in ("inline", "process"):
            raise ValueError(f"workers must be 'inline' or 'process', not {workers!r}")
        self.factories = list(factories)
        self.timeout = float(timeout)
        self.budget = budget or FailureBudget()
        self.parallel = workers == "process" and len(factories) > 1
        self.size = len(factories)
        self._slots: list[_Slot] = []
        try:
            if self.parallel:
                procs = [_ProcessEnv(f, i) for i, f in enumerate(self.factories)]
                self._slots.extend(procs)
                for i, proc in enumerate(procs):
                    try:
                        proc.handshake(self.timeout)
                    except _WorkerError as e:  # a bad config fails fast: no restarts at startup
                        raise EnvError(f"env {i} could not start: {e}") from None
            else:
                for f in self.factories:  # a factory's error reaches the caller as it is
                    self._slots.append(_InlineEnv(f, f()))
        except BaseException:
            self._kill_all()
            raise
        first = self._slots[0]
        self.obs_converter: ObsConverter = first.obs_converter
        for note in self.obs_converter.notes:  # what the model will not see: once per pool, not per env
            print(f"warning: {note}", file=sys.stderr)
        self.act_converter: ActionConverter = first.act_converter
        self.obs_space: dict[str, Space] = self.obs_converter.spaces
        self.act_space: Space = self.act_converter.space
        self.restarts = 0
        self.last_errors: list[str] = []
        self._health = [EnvHealth() for _ in self.factories]
        self._last_obs: list[dict[str, np.ndarray] | None] = [None] * self.size
        self._needs_reset = np.ones(self.size, bool)
        self.episode_seed = episode_seed
        self.episodes = np.zeros(self.size, np.int64)  # episodes started per env
        self._pending: tuple[np.ndarray, dict[int, _WorkerError]] | None = None

    def _reset_seed(self, i: int) -> int | None:
        """The seed of env ``i``'s next episode (and count it), if seeds are given."""
        episode = int(self.episodes[i])
        self.episodes[i] += 1
        return None if self.episode_seed is None else self.episode_seed(i, episode)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step every env with its action (ignored for envs being reset).

        All requests go out before any answer is awaited, so process workers step in
        parallel and one deadline covers them all; failed envs are restarted afterwards.
        """
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Send every env its step (or reset) and return at once: process workers step
        while the caller does something else, such as training. :meth:`step_wait` then
        collects the answers; nothing else may be called in between."""
        if self._pending is not None:
            raise RuntimeError("step_async called twice without step_wait")
        reset = self._needs_reset.copy()
        failures: dict[int, _WorkerError] = {}
        for i, slot in enumerate(self._slots):
            try:
                slot.send("reset", self._reset_seed(i)) if reset[i] else slot.send("step", actions[i])
            except _WorkerError as e:
                failures[i] = e
        self._pending = (reset, failures)

    def step_wait(self) -> dict[str, np.ndarray]:
        """The stacked steps of the last :meth:`step_async`, failed envs restarted.

        The timeout counts from here, not from the send, so time the caller spent
        training in between is never mistaken for a hung env.
        """
        if self._pending is None:
            raise RuntimeError("step_wait called without step_async")
        reset, failures = self._pending
        self._pending = None
        deadline = time.monotonic() + self.timeout if self.timeout > 0 else None
        answers: dict[int, Step] = {}
        for i, slot in enumerate(self._slots):
            if i not in failures:
                try:
                    answers[i] = slot.receive(deadline, self.timeout)
                except _WorkerError as e:
                    failures[i] = e
        for i, failure in sorted(failures.items()):  # replacements start together ...
            self._replace(i, failure)
        for i in sorted(failures):  # ... and are waited for one by one
            answers[i] = self._recover(i, bool(reset[i]))
        steps = [answers[i] for i in range(self.size)]
        for i, step in enumerate(steps):
            self._last_obs[i] = {k: step[k] for k in self.obs_space}
            self._health[i].completed()
        out = stack(steps)
        self._needs_reset = out["is_last"].astype(bool)
        return out

    def fast_forward(
        self, i: int, episode: int, actions: Sequence[Any], expected: dict[str, np.ndarray] | None = None
    ) -> Step:
        """Start episode ``episode`` of env ``i`` from its seed and replay ``actions``;
        return the step it arrives at, as :meth:`step` would have.

        For a deterministic env this restores its exact state. ``expected`` holds the
        observations the original run stored (``[len(actions), ...]`` per key: the
        reset's and each step's but the last); the first one that differs raises
        :class:`ReplayMismatchError`.
        """
        slot = self._slots[i]
        self.episodes[i] = episode
        slot.send("reset", self._reset_seed(i))
        step = slot.receive(None, 0.0)  # replaying a long episode may take a while
        for t, action in enumerate(actions):
            if expected is not None:
                for key, values in expected.items():
                    if not np.array_equal(np.asarray(step[key]), values[t]):
                        raise ReplayMismatchError(f"env {i}: {key} differs from the stored one at step {t}")
            slot.send("step", action)
            step = slot.receive(None, 0.0)
        self._last_obs[i] = {k: step[k] for k in self.obs_space}
        self._needs_reset[i] = bool(step["is_last"])
        return step  # type: ignore[no-any-return]

    def start_fresh(self, i: int, episode: int) -> None:
        """Make env ``i``'s next call a reset into episode ``episode``."""
        self.episodes[i] = episode
        self._needs_reset[i] = True

    def _replace(self, i: int, failure: _WorkerError) -> None:
        """End env ``i``'s worker, count ``failure`` against the budget, start another."""
        self._slots[i].kill()
        self._count_failure(i, failure)
        if self.parallel:
            self._slots[i] = _ProcessEnv(self.factories[i], i)
        else:
            self._slots[i] = _InlineEnv(self.factories[i])

    def _recover(self, i: int, was_reset: bool) -> Step:
        """Env ``i``'s step once its replacement is up: a truncation of the failed
        episode or, when the failure hit a reset, a reset of the new env. Each failure
        on the way replaces the env again and counts to the budget."""
        while True:
            slot = self._slots[i]
            try:
                slot.handshake(self.timeout)
                if not was_reset:
                    return self._truncated(i)
                self.episodes[i] -= 1  # the failed reset's episode starts again
                slot.send("reset", self._reset_seed(i))
                deadline = time.monotonic() + self.timeout if self.timeout > 0 else None
                return slot.receive(deadline, self.timeout)  # type: ignore[no-any-return]
            except _WorkerError as e:
                self._replace(i, e)

    def _count_failure(self, i: int, failure: _WorkerError) -> None:
        """Record a failure of env ``i``: raise :class:`EnvError` past the budget, else
        count the restart about to happen and note it for the log."""
        health = self._health[i]
        health.failed(self.budget.crash_steps)
        error = str(failure).strip() or "unknown error"
        verdict = self.budget.verdict(health)
        if verdict is not None:
            raise EnvError(f"env {i} {verdict}; the last failure: {error}") from failure.cause
        self.restarts += 1
        self.last_errors.append(
            f"env {i} failed and was restarted ({health.failures} failures in {health.calls:,} calls so "
            f"far, restart {self.restarts} of the run): {error.splitlines()[0]}"
        )

    def _truncated(self, i: int) -> Step:
        """End env ``i``'s episode on its last good observation, without reward, as a
        truncation: the episode stopped for a reason that is no fault of the agent."""
        last = self._last_obs[i]
        assert last is not None, "a step always follows a reset that stored an observation"
        return pack(dict(last), 0.0, False, True, False)

    def _kill_all(self) -> None:
        for slot in self._slots:
            slot.kill()

    def close(self) -> None:
        for slot in self._slots:
            slot.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
