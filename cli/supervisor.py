"""A small supervisor for the child processes of ``dfd serve`` and ``dfd demo``.

:class:`ProcessGroup` starts each child in its own session (so a Ctrl-C on the terminal
reaches only ``dfd serve``, which then stops the children in order, and so the signals
it sends reach the child's own children too: rq's work horses, uvicorn's workers). It
reports the first child that exits and stops the rest: SIGTERM to every child's process
group, a shared grace period, then SIGKILL for whatever is left.

Stdlib only; nothing here knows what the children are.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class Exited:
    """A child that ended: its name and its exit status (negative: killed by that signal)."""

    name: str
    returncode: int


class ProcessGroup:
    """Children started together and stopped together, last started first.

    Args:
        stop_timeout_s: Grace period after SIGTERM before SIGKILL, shared by all children.
    """

    def __init__(self, stop_timeout_s: float = 10.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self._children: dict[str, subprocess.Popen[bytes]] = {}

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
        process = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._children[name] = process
        return process

    @property
    def names(self) -> list[str]:
        return list(self._children)

    def pid(self, name: str) -> int:
        return self._children[name].pid

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._children.items()}

    def running(self, name: str) -> bool:
        return self._children[name].poll() is None

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
            _signal_group(process.pid, signal.SIGKILL)
        return {name: int(process.returncode) for name, process in children}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # Nothing left in that group (or it now belongs to someone else): leave it alone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
