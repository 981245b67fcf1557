"""ProcessGroup, Supervisor, Watchdog: children in their own sessions, stopped in order,
restarted with backoff, and nothing left behind, even when their parent is SIGKILLed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from cli.supervisor import (
    BackgroundRestart,
    Exited,
    GaveUp,
    ProcessGroup,
    RestartPolicy,
    Supervisor,
    Watchdog,
)

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


# -- restarts ----------------------------------------------------------------------------
FAST = RestartPolicy(max_crashes=3, window_s=30.0, backoff_initial_s=0.05, backoff_max_s=0.2)


def run_until(supervisor: Supervisor, condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        assert supervisor.check() is None
        time.sleep(0.02)


def test_a_child_that_exits_is_restarted_and_the_restart_logged(tmp_path: Path) -> None:
    marker = tmp_path / "ran-once"
    # The first run exits with status 3; the restarted one keeps running.
    script = (
        "import pathlib, sys, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.write_text('x'); sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    lines: list[str] = []
    with ProcessGroup(stop_timeout_s=5) as group:
        group.start("crashy", [sys.executable, "-c", script])
        first = group.pid("crashy")
        supervisor = Supervisor(FAST, log=lines.append)
        supervisor.watch_group(group)

        run_until(supervisor, lambda: supervisor.restarts == 1, timeout_s=10)

        assert group.running("crashy") and group.pid("crashy") != first
        assert lines == [
            "crashy exited with status 3; restarting in 0.1 s (crash 1 of 3 allowed within 30 s)",
            "crashy restarted",
        ]
        time.sleep(0.3)
        assert supervisor.check() is None and group.running("crashy")


def test_repeated_fast_crashes_give_up_with_one_clear_message() -> None:
    lines: list[str] = []
    with ProcessGroup(stop_timeout_s=5) as group:
        group.start("broken", [sys.executable, "-c", "raise SystemExit(2)"])
        supervisor = Supervisor(FAST, log=lines.append)
        supervisor.watch_group(group)
        started = time.monotonic()

        gave_up = supervisor.run(poll_s=0.02)

        assert gave_up == GaveUp("broken", 2, crashes=4, window_s=30.0)
        assert str(gave_up) == (
            "broken crashed 4 times within 30 s (last exit status 2); "
            "giving up and stopping everything"
        )
        # Backoff doubles up to its cap: 0.05, 0.1, 0.2 s.
        delays = [line.split("restarting in ")[1].split(" s")[0] for line in lines if "in " in line]
        assert delays == ["0.1", "0.1", "0.2"]  # printed with one decimal: 0.05 -> 0.1
        assert supervisor.restarts == 3
        assert time.monotonic() - started >= 0.35


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_crashes_older_than_the_window_are_forgotten() -> None:
    """A child that crashes now and then, never in a burst, is restarted for ever."""
    clock = FakeClock()
    code: list[int | None] = [None]
    lines: list[str] = []
    policy = RestartPolicy(max_crashes=2, window_s=10.0, backoff_initial_s=1.0, backoff_max_s=8.0)
    supervisor = Supervisor(policy, log=lines.append, clock=clock)
    supervisor.watch("svc", lambda: code[0], lambda: code.__setitem__(0, None))

    for _ in range(5):  # one crash every 11 s: each is the first within its window
        code[0] = -9
        assert supervisor.check() is None
        clock.now += 1.0
        assert supervisor.check() is None
        assert code[0] is None  # restarted after the first backoff step (1 s)
        clock.now += 10.0
    assert supervisor.restarts == 5
    assert all("restarting in 1.0 s (crash 1 of 2" in line for line in lines[::2])

    # Three crashes within 10 s: the third gives up.
    for expected_delay in ("1.0", "2.0"):
        code[0] = 1
        assert supervisor.check() is None
        assert lines[-1].startswith(f"svc exited with status 1; restarting in {expected_delay} s")
        clock.now += float(expected_delay)
        assert supervisor.check() is None
    code[0] = 1
    assert supervisor.check() == GaveUp("svc", 1, crashes=3, window_s=10.0)


def test_a_restart_that_fails_counts_as_another_crash() -> None:
    clock = FakeClock()
    lines: list[str] = []

    def restart() -> None:
        raise RuntimeError("port 6379 in use")

    supervisor = Supervisor(
        RestartPolicy(max_crashes=1, window_s=60, backoff_initial_s=1.0),
        log=lines.append,
        clock=clock,
    )
    supervisor.watch("redis", lambda: -9, restart)
    assert supervisor.check() is None
    clock.now = 1.0
    assert supervisor.check() == GaveUp("redis", -9, crashes=2, window_s=60)
    assert lines[1] == "redis did not restart: port 6379 in use"


def test_each_restart_is_reported_and_a_failing_report_changes_nothing() -> None:
    clock = FakeClock()
    lines: list[str] = []
    reported: list[str] = []
    code: dict[str, int | None] = {"worker-1": None, "redis": None}

    def report(name: str) -> None:
        reported.append(name)
        if name == "redis":
            raise ConnectionError("redis is still loading")

    supervisor = Supervisor(
        RestartPolicy(max_crashes=5, window_s=60, backoff_initial_s=1.0),
        log=lines.append,
        clock=clock,
        on_restart=report,
    )
    for name in code:
        supervisor.watch(name, lambda n=name: code[n], lambda n=name: code.__setitem__(n, None))
    code["worker-1"], code["redis"] = -9, 1
    assert supervisor.check() is None
    assert reported == []  # a crash is not a restart (yet)
    clock.now = 1.0
    assert supervisor.check() is None

    assert reported == ["worker-1", "redis"]
    assert supervisor.restarts == 2 and code == {"worker-1": None, "redis": None}
    assert lines[-1] == "redis's restart was not counted: redis is still loading"
    code["worker-1"] = -9
    assert supervisor.check() is None  # supervising goes on
    clock.now = 4.0
    assert supervisor.check() is None
    assert reported == ["worker-1", "redis", "worker-1"]


def test_a_running_child_cannot_be_restarted() -> None:
    with ProcessGroup(stop_timeout_s=5) as group:
        group.start("a", SLEEPER)
        with pytest.raises(ValueError, match="'a' to have ended, got it running"):
            group.restart("a")


# -- nothing outlives its parent ---------------------------------------------------------
PARENT = """
import sys, time
from cli.supervisor import ProcessGroup, Watchdog
watchdog = Watchdog(grace_s=2.0).start() if sys.argv[1] == "watchdog" else None
group = ProcessGroup(watchdog=watchdog)
child = group.start("child", [sys.executable, "-c", sys.argv[2]])
print(watchdog.pid if watchdog else 0, child.pid, flush=True)
time.sleep(60)
"""

# A child (it exits on SIGTERM, its parent-death signal) with a grandchild in its process
# group that ignores SIGTERM: only the watchdog's SIGKILL to the group ends that one.
CHILD = (
    "import signal, subprocess, sys, time\n"
    "g = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
    "print(g.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _start_parent(mode: str, child: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode, child],
        cwd=root,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    return parent, pids


def test_a_child_dies_with_its_parent_killed_by_sigkill() -> None:
    parent, (_, child) = _start_parent("none", "import time; time.sleep(60)")
    assert not gone(child)

    parent.kill()
    parent.wait()

    wait_until(lambda: gone(child), timeout_s=5)
    assert gone(child)  # the parent-death signal, with no watchdog


def test_the_watchdog_stops_grandchildren_when_the_parent_is_killed() -> None:
    parent, (watchdog, child) = _start_parent("watchdog", CHILD)
    wait_until(lambda: len(psutil.Process(child).children()) == 1, timeout_s=10)
    grandchild = psutil.Process(child).children()[0].pid
    assert not gone(watchdog) and not gone(grandchild)

    parent.kill()
    parent.wait()

    wait_until(lambda: gone(child) and gone(grandchild) and gone(watchdog), timeout_s=10)
    assert gone(child), "the child outlived its parent"
    assert gone(grandchild), "the grandchild (SIGTERM ignored) outlived the parent"
    assert gone(watchdog), "the watchdog did not exit after its work"


def test_a_watchdog_told_goodbye_stops_nothing() -> None:
    with ProcessGroup(stop_timeout_s=5) as group:
        child = group.start("a", SLEEPER)
        watchdog = Watchdog(grace_s=1.0).start()
        watchdog.watch(child.pid)
        watchdog_pid = watchdog.pid
        assert watchdog_pid is not None

        watchdog.close()

        assert gone(watchdog_pid)
        time.sleep(0.2)
        assert group.running("a")


def test_a_child_started_from_another_thread_outlives_that_thread() -> None:
    """The parent-death signal fires when the starting *thread* ends: a child a short-lived
    thread starts (a test's fault injector restarting Redis) must not die with it."""
    import threading

    def start_then_linger() -> None:
        group.start("a", SLEEPER)
        time.sleep(1.0)  # the child has set up its signals by now; then the thread ends

    with ProcessGroup(stop_timeout_s=5) as group:
        starter = threading.Thread(target=start_then_linger)
        starter.start()
        starter.join()
        time.sleep(0.5)
        assert group.running("a")


def test_a_slow_restart_in_the_background_does_not_hold_up_the_others() -> None:
    """Triton's restart waits for readiness; meanwhile a crashed Redis is restarted at once
    (run in the loop, a Redis killed then stayed down 26-31 s)."""
    lines: list[str] = []
    slow_up = threading.Event()
    slow = {"code": 1, "attempts": 0}
    fast = {"code": None}

    def slow_restart() -> None:
        slow["attempts"] += 1
        slow_up.wait(10)
        if slow["attempts"] == 1:
            raise RuntimeError("not ready after 300 s")  # the first restart fails
        slow["code"] = None

    background = BackgroundRestart("triton", lambda: slow["code"], slow_restart, lines.append)
    supervisor = Supervisor(FAST, log=lines.append)
    supervisor.watch("triton", background.returncode, background.restart)
    supervisor.watch("redis", lambda: fast["code"], lambda: fast.__setitem__("code", None))
    run_until(supervisor, lambda: slow["attempts"] == 1, 5)
    assert background.returncode() is None  # restarting counts as running
    fast["code"] = -9  # Redis dies while Triton is starting
    run_until(supervisor, lambda: fast["code"] is None, 5)  # restarted without waiting
    assert slow["attempts"] == 1
    slow_up.set()
    run_until(supervisor, lambda: slow["attempts"] == 2 and slow["code"] is None, 5)
    background.join(5)
    assert "triton did not restart: not ready after 300 s" in lines
    assert any(line.startswith("triton exited with status 1") for line in lines)  # a crash
