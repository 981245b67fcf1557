"""Job temp folders go away in every outcome; a starting worker sweeps orphans."""

import os
import signal
import subprocess
import sys
import time

import pytest

from dfd.errors import CorruptMediaError, InternalError
from dfd.settings import Settings
from dispatcher.cleanup import job_workspace, purge_expired, sweep_orphans

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path / "data")


class JobTimeoutException(Exception):
    """Stands in for rq.timeouts.JobTimeoutException (raised from a signal handler)."""


def _fill(folder):
    (folder / "download.mp4").write_bytes(b"x" * 1000)
    (folder / "frames").mkdir()
    (folder / "frames" / "0001.jpg").write_bytes(b"y")
    ro = folder / "readonly.bin"
    ro.write_bytes(b"z")
    ro.chmod(0o400)


def test_workspace_is_private_named_after_job_and_pid_and_removed_on_success(settings):
    with job_workspace(settings, "abc-123") as folder:
        assert folder == settings.tmp_dir / f"abc-123-{os.getpid()}"
        assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
        _fill(folder)
    assert not folder.exists()


@pytest.mark.parametrize(
    "error", [CorruptMediaError("probe: bad"), RuntimeError("bug"), KeyboardInterrupt()]
)
def test_workspace_is_removed_on_error_and_interrupt(settings, error):
    with pytest.raises(type(error)), job_workspace(settings, "job") as folder:
        _fill(folder)
        raise error
    assert list(settings.tmp_dir.iterdir()) == []


def test_workspace_is_removed_when_a_timeout_signal_interrupts_the_job(settings):
    # RQ's death penalty raises JobTimeoutException from a SIGALRM handler mid-work.
    def alarm(_signum, _frame):
        raise JobTimeoutException("Task exceeded maximum timeout value (1 seconds)")

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        with pytest.raises(JobTimeoutException), job_workspace(settings, "slow") as folder:
            _fill(folder)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            time.sleep(5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not folder.exists()


@pytest.mark.parametrize("job_id", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_unsafe_job_ids_are_refused(settings, job_id):
    with (
        pytest.raises(InternalError, match="not a safe folder name"),
        job_workspace(settings, job_id),
    ):
        pass


def test_sweep_removes_folders_of_dead_workers_only(settings):
    settings.tmp_dir.mkdir(parents=True)
    # a worker that died (SIGKILL) with its folder in place
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = settings.tmp_dir / f"job1-{child.pid}"
    dead.mkdir()
    (dead / "download.mp4").write_bytes(b"x")
    child.kill()
    child.wait()
    # a live worker (a sleeping child) and this process
    live_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.05)
        live = settings.tmp_dir / f"job2-{live_child.pid}"
        live.mkdir()
        mine = settings.tmp_dir / f"job3-{os.getpid()}"
        mine.mkdir()
        unrelated = settings.tmp_dir / "not-a-job-folder"
        unrelated.mkdir()
        removed = sweep_orphans(settings)
        assert removed == [dead]
        assert not dead.exists() and live.exists() and mine.exists() and unrelated.exists()
    finally:
        live_child.kill()
        live_child.wait()


def test_sweep_treats_a_reused_pid_as_dead(settings):
    settings.tmp_dir.mkdir(parents=True)
    # Our parent process is alive and started before this folder was made: it may own it.
    folder = settings.tmp_dir / f"job-{os.getppid()}"
    folder.mkdir()
    assert sweep_orphans(settings) == []
    # Back-dated to before that process started, the folder cannot be its: the pid was reused.
    os.utime(folder, (1_000_000, 1_000_000))
    assert sweep_orphans(settings) == [folder]


def test_sweep_without_a_tmp_dir_is_a_no_op(settings):
    assert sweep_orphans(settings) == []


def test_purge_expired_calls_the_store_and_sweeps(settings):
    class Store:
        def __init__(self):
            self.calls = []

        def purge_expired(self, now=None):
            self.calls.append(now)
            return 3

    settings.tmp_dir.mkdir(parents=True)
    orphan = settings.tmp_dir / "job-999999999"
    orphan.mkdir()
    store = Store()
    assert purge_expired(store, settings, now=1234.0) == 3
    assert store.calls == [1234.0]
    assert not orphan.exists()
