"""A small supervisor for the child processes of ``dfd serve`` and ``dfd demo``.

:class:`ProcessGroup` starts each child in its own session (so a Ctrl-C on the terminal
reaches only ``dfd serve``, which then stops the children in order, and so the signals
it sends reach the child's own children too: rq's work horses, uvicorn's workers). It
stops them all: SIGTERM to every child's process group, a shared grace period, then
SIGKILL for whatever is left. A child that ended can be started again as it was.

:class:`Supervisor` watches children (the group's, and any other process with an exit
status and a way to restart, as the local Redis and Triton) and restarts one that
ended, after a backoff that doubles with each crash; :class:`RestartPolicy` says when
it stops trying (too many crashes in a short window).

Nothing started here outlives ``dfd serve``, even when it is killed with SIGKILL:

- each child gets a parent-death signal (:func:`die_with_parent`): the kernel sends it
  SIGTERM when ``dfd serve`` dies;
- :class:`Watchdog`, a small process of its own, knows every child's process group
  and, when ``dfd serve`` dies without telling it, stops those groups whole
  (SIGTERM, a grace period, SIGKILL), grandchildren included, which a parent-death
  signal cannot reach (a busy rq worker would wait for its job).

Stdlib only; nothing here knows what the children are.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

WATCHDOG_GRACE_S = 10.0


# Run by a fresh interpreter in the child: set the parent-death signal, make sure the
# parent did not die before that, then become the real program (the setting survives exec).
_EXEC_WITH_PDEATHSIG = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("parent died before its child started")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def die_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel sends it SIGTERM when this process dies.

    Linux only (PR_SET_PDEATHSIG); elsewhere ``argv`` as it is, and the :class:`Watchdog`
    alone cleans up. Set by a small exec wrapper rather than a ``preexec_fn``: running
    Python between fork and exec in a process with threads (gRPC's, in the tests and in
    ``dfd analyze``) can hang or crash the child before it starts.

    The kernel sends the signal when the *thread* that started the child ends, so only a
    child started from the main thread gets it (``dfd serve`` starts and restarts all
    of its children there); one started from another thread (a test's fault injector)
    would die with that thread, and gets ``argv`` as it is.
    """
    if not sys.platform.startswith("linux") or not _in_main_thread():
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *argv]


@dataclass(frozen=True)
class Exited:
    """A child that ended: its name and its exit status (negative: killed by that signal)."""

    name: str
    returncode: int


@dataclass(frozen=True)
class _Spec:
    argv: list[str]
    env: dict[str, str] | None
    cwd: Path | None
    stdout: IO[bytes] | int | None
    stderr: IO[bytes] | int | None


class ProcessGroup:
    """Children started together and stopped together, last started first.

    Args:
        stop_timeout_s: Grace period after SIGTERM before SIGKILL, shared by all children.
        watchdog: Told each child's process group, so the group is stopped even when
            this process is killed.
    """

    def __init__(self, stop_timeout_s: float = 10.0, watchdog: Watchdog | None = None) -> None:
        self.stop_timeout_s = stop_timeout_s
        self.watchdog = watchdog
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._specs: dict[str, _Spec] = {}
        self._cleaned: set[int] = set()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as child ``name`` in a new session.

        Raises:
            ValueError: when a child of that name is already in the group.
        """
        if name in self._children:
            raise ValueError(f"process group: expected a new child name, got {name!r} twice")
        spec = _Spec(list(argv), dict(env) if env is not None else None, cwd, stdout, stderr)
        self._specs[name] = spec
        return self._spawn(name, spec)

    def _spawn(self, name: str, spec: _Spec) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            die_with_parent(spec.argv),
            env=spec.env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=spec.stdout,
            stderr=spec.stderr,
            start_new_session=True,
        )
        self._children[name] = process
        if self.watchdog is not None:
            self.watchdog.watch(process.pid)
        return process

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start child ``name`` again as it was first started; its old process group is
        stopped first (a dead leader's orphans must not run beside the new child), if
        :meth:`returncode` did not do it already.

        Raises:
            ValueError: when that child is still running.
        """
        if self.returncode(name) is None:
            raise ValueError(f"process group: expected {name!r} to have ended, got it running")
        return self._spawn(name, self._specs[name])

    def _ended(self, process: subprocess.Popen[bytes]) -> None:
        """Once a leader has ended: its orphans go too, and the watchdog forgets the group
        (an empty group's number may be reused by an unrelated process)."""
        if process.pid not in self._cleaned:
            self._cleaned.add(process.pid)
            _signal_group(process.pid, signal.SIGKILL)
            if self.watchdog is not None:
                self.watchdog.forget(process.pid)

    @property
    def names(self) -> list[str]:
        return list(self._children)

    def pid(self, name: str) -> int:
        return self._children[name].pid

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._children.items()}

    def running(self, name: str) -> bool:
        return self._children[name].poll() is None

    def returncode(self, name: str) -> int | None:
        """Child ``name``'s exit status, ``None`` while it runs."""
        process = self._children[name]
        code = process.poll()
        if code is not None:
            self._ended(process)
        return code

    def exited(self) -> list[Exited]:
        """Children that have ended so far, in start order."""
        return [
            Exited(name, code)
            for name, process in self._children.items()
            if (code := process.poll()) is not None
        ]

    def wait_any(self, timeout_s: float, poll_s: float = 0.2) -> Exited | None:
        """Wait up to ``timeout_s`` for any child to end; the first one found, else ``None``."""
        deadline = time.monotonic() + timeout_s
        while True:
            ended = self.exited()
            if ended:
                return ended[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(poll_s, remaining))

    def stop(self) -> dict[str, int]:
        """Stop every child: SIGTERM (last started first), the grace period, then SIGKILL.

        Each signal goes to the child's whole process group, and a final SIGKILL to the
        group reaps grandchildren that outlived their parent. Safe to call twice.

        Returns:
            Each child's exit status.
        """
        children = list(reversed(self._children.items()))
        for _, process in children:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for _, process in children:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for _, process in children:
            # The leader is gone; anything still in its group is an orphan of ours.
            self._ended(process)
        return {name: int(process.returncode) for name, process in children}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # Nothing left in that group (or it now belongs to someone else): leave it alone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# -- restarts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RestartPolicy:
    """When a child that ended is started again.

    The n-th crash within ``window_s`` waits ``backoff_initial_s * 2**(n-1)`` (at most
    ``backoff_max_s``) before the restart; crash number ``max_crashes + 1`` within the
    window gives up. A child that stays up longer than the window starts afresh.
    """

    max_crashes: int = 5
    window_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True)
class GaveUp:
    """The supervisor stopped restarting ``name``: it crashed too often too fast."""

    name: str
    returncode: int
    crashes: int
    window_s: float

    def __str__(self) -> str:
        return (
            f"{self.name} crashed {self.crashes} times within {self.window_s:.0f} s (last "
            f"exit status {self.returncode}); giving up and stopping everything"
        )


@dataclass
class _Watched:
    name: str
    returncode: Callable[[], int | None]
    restart: Callable[[], object]
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    last_code: int = 0


class Supervisor:
    """Restarts watched children that end, with backoff; gives up on a crash loop.

    Args:
        policy: Backoff and when to give up.
        log: Prints one line per crash and per restart.
        clock: Monotonic seconds (a test may pass its own).
        on_restart: Called with the child's name after each restart (``dfd serve``
            counts them for ``dfd exporter``); an exception from it is logged, and
            changes nothing of the supervision.
    """

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
        on_restart: Callable[[str], object] | None = None,
    ) -> None:
        self.policy = policy or RestartPolicy()
        self.log = log
        self.clock = clock
        self.on_restart = on_restart
        self._watched: list[_Watched] = []
        self.restarts = 0

    def watch(
        self, name: str, returncode: Callable[[], int | None], restart: Callable[[], object]
    ) -> None:
        """Watch ``name``: ``returncode()`` is ``None`` while it runs; ``restart()`` starts
        it again (an exception from it counts as another crash)."""
        self._watched.append(_Watched(name, returncode, restart))

    def watch_group(self, group: ProcessGroup) -> None:
        """Watch every child of ``group``."""
        for name in group.names:
            self.watch(
                name,
                functools.partial(group.returncode, name),
                functools.partial(group.restart, name),
            )

    def _crashed(self, child: _Watched, code: int, now: float) -> GaveUp | None:
        child.last_code = code
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > self.policy.window_s:
            child.crashes.popleft()
        count = len(child.crashes)
        if count > self.policy.max_crashes:
            return GaveUp(child.name, code, count, self.policy.window_s)
        delay = min(self.policy.backoff_initial_s * 2 ** (count - 1), self.policy.backoff_max_s)
        child.restart_at = now + delay
        self.log(
            f"{child.name} exited with status {code}; restarting in {delay:.1f} s "
            f"(crash {count} of {self.policy.max_crashes} allowed within "
            f"{self.policy.window_s:.0f} s)"
        )
        return None

    def check(self) -> GaveUp | None:
        """One round: note children that ended, restart those whose backoff has passed."""
        for child in self._watched:
            now = self.clock()
            if child.restart_at is None:
                code = child.returncode()
                if code is not None and (gave_up := self._crashed(child, code, now)):
                    return gave_up
            elif now >= child.restart_at:
                child.restart_at = None
                try:
                    child.restart()
                except Exception as exc:  # noqa: BLE001 (a failed restart is one more crash)
                    self.log(f"{child.name} did not restart: {exc}")
                    if gave_up := self._crashed(child, child.last_code, self.clock()):
                        return gave_up
                    continue
                self.restarts += 1
                self.log(f"{child.name} restarted")
                if self.on_restart is not None:
                    try:
                        self.on_restart(child.name)
                    except Exception as exc:  # noqa: BLE001 (counting must not stop restarts)
                        self.log(f"{child.name}'s restart was not counted: {exc}")
        return None

    def run(self, poll_s: float = 0.5, until: Callable[[], bool] | None = None) -> GaveUp | None:
        """Check every ``poll_s`` until a child is given up on (that child) or ``until()``."""
        while True:
            if gave_up := self.check():
                return gave_up
            if until is not None and until():
                return None
            time.sleep(poll_s)


class BackgroundRestart:
    """A child's slow restart run in a thread, so the supervisor's loop goes on watching
    and restarting the others meanwhile.

    Triton's start waits for readiness (tens of seconds, loading every model): run in the
    loop, a Redis killed during it stayed down 26-31 s instead of about 1 s, at the edge of
    what workers ride out. While the restart runs the child counts as running; a restart
    that raised counts as one crash (status 1, reported once).

    Args:
        name: the child's name in the log.
        returncode: the child's own ``returncode()`` (``None`` while it runs).
        restart: starts it again and returns once it is up (or raises).
        log: where a failed restart is said.
    """

    def __init__(
        self,
        name: str,
        returncode: Callable[[], int | None],
        restart: Callable[[], object],
        log: Callable[[str], None],
    ) -> None:
        self.name = name
        self._returncode = returncode
        self._restart = restart
        self._log = log
        self._thread: threading.Thread | None = None
        self._failed = False

    def returncode(self) -> int | None:
        if self._thread is not None and self._thread.is_alive():
            return None  # restarting
        if self._failed:
            self._failed = False
            return 1
        return self._returncode()

    def restart(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name=f"restart-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._restart()
        except Exception as exc:  # noqa: BLE001 (a failed restart is one more crash)
            self._log(f"{self.name} did not restart: {exc}")
            self._failed = True

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a restart in progress (before stopping the child)."""
        if self._thread is not None:
            self._thread.join(timeout_s)


# -- the watchdog -----------------------------------------------------------------------
class Watchdog:
    """A process that stops the watched process groups when this process dies.

    It reads ``+PID`` / ``-PID`` lines (a process group to stop, one no longer to stop)
    on a pipe only this process holds; end of file without ``close()``'s goodbye means
    this process died, and it stops every group it was told about: SIGTERM, up to
    ``grace_s`` seconds, then SIGKILL.

    Args:
        grace_s: Time the groups get between SIGTERM and SIGKILL.
    """

    def __init__(self, grace_s: float = WATCHDOG_GRACE_S) -> None:
        self.grace_s = grace_s
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Watchdog:
        if self._process is None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "cli.supervisor", "--watchdog", str(self.grace_s)],
                cwd=Path(__file__).resolve().parents[1],
                stdin=subprocess.PIPE,
                # Its own session: a Ctrl-C or a SIGTERM to our group does not reach it.
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _send(self, line: str) -> None:
        if self._process is None or self._process.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._process.stdin.write(line.encode() + b"\n")
            self._process.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self, timeout_s: float = 5.0) -> None:
        """Say goodbye (nothing to stop) and wait for it to exit. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(BrokenPipeError, ValueError):
            assert process.stdin is not None
            process.stdin.write(b"bye\n")
            process.stdin.close()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_groups(pgids: Iterable[int], grace_s: float) -> None:
    """SIGTERM each process group, wait up to ``grace_s`` for them to empty, SIGKILL the rest."""
    groups = set(pgids)
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while groups and time.monotonic() < deadline:
        groups = {pgid for pgid in groups if _group_alive(pgid)}
        time.sleep(0.1)
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def watchdog_main(lines: IO[bytes], grace_s: float) -> set[int]:
    """The watchdog's loop: read ``lines`` to the end; stop the groups left if no goodbye.

    Returns:
        The process groups it stopped.
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    groups: set[int] = set()
    for raw in lines:
        line = raw.strip()
        if line == b"bye":
            return set()
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
    stop_groups(groups, grace_s)
    return groups


if __name__ == "__main__" and sys.argv[1:2] == ["--watchdog"]:
    watchdog_main(sys.stdin.buffer, float(sys.argv[2]))
