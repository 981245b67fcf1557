"""ProcessGroup: children in their own sessions, stopped in order, nothing left behind."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from cli.supervisor import Exited, ProcessGroup

pytestmark = pytest.mark.unit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition: Callable[[], object], timeout_s: float) -> None:
    """Poll ``condition`` every 50 ms until it holds or ``timeout_s`` passes (the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_stop_ends_every_child_with_sigterm() -> None:
    group = ProcessGroup(stop_timeout_s=5)
    group.start("a", SLEEPER)
    group.start("b", SLEEPER)
    pids = group.pids()
    assert all(group.running(name) for name in pids)

    codes = group.stop()

    assert codes == {"b": -15, "a": -15}  # last started is stopped first
    assert all(gone(pid) for pid in pids.values())


def test_child_ignoring_sigterm_is_killed_after_the_grace_period() -> None:
    stubborn = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    group = ProcessGroup(stop_timeout_s=0.5)
    child = group.start("stubborn", [sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"ready"

    started = time.monotonic()
    codes = group.stop()

    assert codes == {"stubborn": -9}
    assert 0.4 < time.monotonic() - started < 5


def test_grandchildren_are_stopped_with_their_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    parent = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    group = ProcessGroup(stop_timeout_s=5)
    group.start("parent", [sys.executable, "-c", parent])
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout_s=10)
    grandchild = int(pid_file.read_text())
    assert not gone(grandchild)

    group.stop()

    wait_until(lambda: gone(grandchild), timeout_s=5)
    assert gone(grandchild)


def test_orphaned_grandchild_is_reaped_when_its_parent_already_exited(tmp_path: Path) -> None:
    pid_file = tmp_path / "orphan.pid"
    parent = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
    )
    group = ProcessGroup(stop_timeout_s=5)
    group.start("parent", [sys.executable, "-c", parent])
    assert group.wait_any(timeout_s=10) == Exited("parent", 0)
    orphan = int(pid_file.read_text())
    assert not gone(orphan)

    group.stop()

    wait_until(lambda: gone(orphan), timeout_s=5)
    assert gone(orphan)


def test_wait_any_reports_the_child_that_exited() -> None:
    with ProcessGroup(stop_timeout_s=5) as group:
        group.start("long", SLEEPER)
        group.start("short", [sys.executable, "-c", "raise SystemExit(3)"])

        assert group.wait_any(timeout_s=10) == Exited("short", 3)
        assert group.running("long")
    assert not group.running("long")


def test_wait_any_times_out_while_all_run() -> None:
    with ProcessGroup(stop_timeout_s=5) as group:
        group.start("long", SLEEPER)
        assert group.wait_any(timeout_s=0.3) is None


def test_names_are_unique() -> None:
    with ProcessGroup() as group:
        group.start("one", SLEEPER)
        with pytest.raises(ValueError, match="'one' twice"):
            group.start("one", SLEEPER)


def test_stop_twice_is_harmless() -> None:
    group = ProcessGroup(stop_timeout_s=5)
    group.start("a", SLEEPER)
    assert group.stop() == group.stop() == {"a": -15}
