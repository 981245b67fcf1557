"""Clean-up, after every job and in the maintenance pass (not a stage of its own): per-job
temp folders, orphans of killed workers, expired evidence.

Each job works in ``tmp_dir/<job id>-<pid>``, removed however the job ends (success,
error, RQ's ``JobTimeoutException``, ``KeyboardInterrupt``). A worker killed with
SIGKILL cannot clean up, so a starting worker sweeps folders whose owning process is
gone (`sweep_orphans`). The folder name carries the pid, so ``tmp_dir`` must be local to
one machine (an ``emptyDir``), not shared between hosts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dfd.errors import InternalError
from dfd.jobid import is_job_id

if TYPE_CHECKING:
    from dfd.settings import Settings

log = logging.getLogger(__name__)

_FOLDER = re.compile(r"^(?P<job>.+)-(?P<pid>\d+)$")


class Purgeable(Protocol):
    def purge_expired(self, now: float | None = None) -> int: ...


@contextlib.contextmanager
def job_workspace(settings: Settings, job_id: str) -> Iterator[Path]:
    """A fresh folder for one job attempt, removed when the block exits, however it exits.

    Raises:
        InternalError: The job id is not a safe folder name.
    """
    if not is_job_id(job_id):
        raise InternalError(f"cleanup: job id {job_id!r} is not a safe folder name")
    root = settings.tmp_dir
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{job_id}-{os.getpid()}"
    if path.exists():  # an earlier attempt of this job in this same process
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # e.g. a read-only file: make it writable and try once more
        for item in path.rglob("*"):
            with contextlib.suppress(OSError):
                item.chmod(0o700)
        shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("cleanup: could not remove %s", path)


def _pid_alive_since(pid: int, folder_mtime: float) -> bool:
    """Whether ``pid`` is a live process that could own a folder last changed at ``folder_mtime``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        import psutil

        # A pid reused by a process started after the folder was made cannot own it.
        return psutil.Process(pid).create_time() <= folder_mtime + 1.0
    except Exception:  # psutil missing, or the process just ended: trust os.kill
        return True


def sweep_orphans(settings: Settings) -> list[Path]:
    """Remove job folders whose owning process is gone (run when a worker starts).

    Returns:
        The folders removed.
    """
    root = settings.tmp_dir
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        match = _FOLDER.match(path.name)
        if not path.is_dir() or match is None:
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid():
            continue
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue
        if not _pid_alive_since(pid, mtime):
            _remove(path)
            removed.append(path)
            log.info("cleanup: removed %s left by process %d", path, pid)
    return removed


def purge_expired(store: Purgeable, settings: Settings, now: float | None = None) -> int:
    """Scheduled purge: evidence past ``evidence_ttl_s`` and orphaned temp folders.

    Returns:
        How many evidence objects were removed.
    """
    now = time.time() if now is None else now
    sweep_orphans(settings)
    count = store.purge_expired(now)
    log.info("cleanup: purged %d expired evidence objects", count)
    return count
