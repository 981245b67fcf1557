"""Runs the real Triton server from the ``nvidia-pytriton`` wheel against a local repository.

Tests, the CLI (``dfd triton``), ``dfd serve`` and the benchmarks use this instead of a
container: the wheel ships ``tritonserver`` (Triton 2.51) with the python backend, which
is all the ``cpu`` repository needs.

    with LocalTriton(settings) as triton:
        client = TritonClient(triton.grpc_url, ...)

The wheel keeps the python backend's stub per Python version apart from the backend, so
``start()`` assembles a backend folder (library, utils, the stub for this interpreter)
under ``data_dir``. The stub embeds ``libpython`` and imports onnxruntime from this
environment: it needs the interpreter's library folder on ``LD_LIBRARY_PATH`` and the
environment's ``bin`` on ``PATH``.

The python backend exchanges tensors with its stubs through ``/dev/shm`` regions (16 MiB
each here) that only a clean stop removes. Ours are named ``dfd_triton_python_*``;
each start (and each stop) removes those no live process has mapped or open, so killed
servers do not fill ``/dev/shm``. A restart after a crash reuses the same ports, so
clients given the URLs keep working.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from cli.supervisor import Watchdog, die_with_parent
from dfd.errors import ConfigurationError, UpstreamUnavailableError
from dfd.ports import free_port
from dfd.settings import Settings

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 4000
PORT_ATTEMPTS = 3
# The python backend's shared-memory regions get this prefix (then a UUID) in /dev/shm.
SHM_PREFIX = "dfd_triton_python_"
SHM_DIR = Path("/dev/shm")


def pytriton_dir() -> Path:
    """The ``tritonserver`` folder inside the installed ``nvidia-pytriton`` wheel."""
    try:
        import pytriton
    except ImportError as exc:
        raise ConfigurationError(
            "local Triton: the nvidia-pytriton package is not installed"
        ) from exc
    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def prepare_backends(destination: Path) -> Path:
    """A backend folder with the python backend and the stub for this interpreter."""
    source = pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ConfigurationError(
            f"local Triton: nvidia-pytriton has no python backend stub for Python {version} ({stub})"
        )
    python = destination / "python"
    python.mkdir(parents=True, exist_ok=True)
    for src in (*sorted((source / "backends" / "python").glob("*.*")), stub):
        dst = python / src.name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
            shutil.copy2(src, tmp)
            tmp.replace(dst)
    return destination


def server_env() -> dict[str, str]:
    """Environment for the server: libpython and this environment's bin reachable."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    # The stub, copied out of the wheel, no longer finds the wheel's bundled libraries
    # (libcudart & co.) through its rpath.
    wheel_libs = str(pytriton_dir().parent.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, wheel_libs, env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def _shm_in_use(folder: Path) -> set[str]:
    """Names of files in ``folder`` some process we can see has mapped or open."""
    used: set[str] = set()
    prefix = f"{folder}/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError), (proc / "maps").open() as maps:
            for line in maps:
                at = line.find(prefix)
                if at >= 0:
                    used.add(line[at + len(prefix) :].split()[0])
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith(prefix):
                        used.add(target[len(prefix) :])
    return used


def remove_stale_shm(folder: Path = SHM_DIR, prefix: str = SHM_PREFIX) -> list[Path]:
    """Remove our python-backend regions in ``folder`` that no live process uses.

    A region of a running server is mapped by the server and its stubs; one a killed
    server left is mapped by nobody. Only this user's files with ``prefix`` are touched.

    Returns:
        The regions removed.
    """
    if not folder.is_dir():
        return []
    candidates = [
        path
        for path in folder.glob(f"{prefix}*")
        if path.is_file() and path.stat().st_uid == os.getuid()
    ]
    if not candidates:
        return []
    used = _shm_in_use(folder)
    removed = []
    for path in candidates:
        if path.name not in used:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _wait_group_gone(pgid: int, timeout_s: float) -> None:
    """Wait until no live process is left in group ``pgid`` (SIGKILLed stubs take a moment
    to exit; a zombie no longer maps anything)."""
    deadline = time.monotonic() + timeout_s
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (from ``/proc/PID/stat``)."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after ")".
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(proc.name))
    return members


class LocalTriton:
    """A ``tritonserver`` child process on free loopback ports.

    Args:
        settings: ``data_dir`` holds the backend folder; the repository defaults to
            ``settings.repository_dir("cpu")``.
        repository: serve this repository folder instead.
        ready_timeout_s: how long ``start()`` waits for ``/v2/health/ready``.
        extra_args: more ``tritonserver`` flags.
        watchdog: Told the server's process group, so it is stopped if this process dies.
    """

    def __init__(
        self,
        settings: Settings,
        repository: Path | None = None,
        *,
        ready_timeout_s: float = READY_TIMEOUT_S,
        extra_args: tuple[str, ...] = (),
        watchdog: Watchdog | None = None,
    ) -> None:
        self.settings = settings
        self.repository = Path(repository or settings.repository_dir("cpu")).resolve()
        self.ready_timeout_s = ready_timeout_s
        self.extra_args = extra_args
        self.watchdog = watchdog
        self.host = "127.0.0.1"
        self.http_port = self.grpc_port = self.metrics_port = 0
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint (tritonclient.grpc's form)."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        """Process id of the running server (its python stubs are its children)."""
        if self._process is None:
            raise UpstreamUnavailableError("local Triton: not started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The server's exit status once it ended on its own; ``None`` while it runs."""
        return self._process.poll() if self._process is not None else None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return ""
        return self._log_path.read_text(errors="replace")[-chars:]

    def errors(self) -> str:
        """Error lines of the server log (model load failures), without CUDA noise."""
        if self._log_path is None or not self._log_path.is_file():
            return ""
        lines = self._log_path.read_text(errors="replace").splitlines()
        # "E1128 ..." is Triton's error severity; a CPU-only machine always logs CUDA ones.
        picked = [
            line for line in lines if line[:1] == "E" and "Cuda" not in line and "CUDA" not in line
        ]
        return "\n".join(picked[-10:])

    def _failure(self, what: str) -> str:
        return (
            f"local Triton: {what} (repository {self.repository})\nerrors:\n{self.errors() or '(none logged)'}"
            f"\nlog tail:\n{self.log_tail(1500)}"
        )

    def command(self) -> list[str]:
        binary = pytriton_dir() / "bin" / "tritonserver"
        backends = prepare_backends(self.settings.data_dir.resolve() / "triton" / "backends")
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={pytriton_dir() / 'caches'}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-cpu-metrics=false",
            "--allow-gpu-metrics=false",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
            # Python-backend models exchange tensors through shared memory; start each
            # region large enough for a batch of face crops so it rarely has to grow.
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=16777216",
            f"--backend-config=python,shm-region-prefix-name={SHM_PREFIX}",
            *self.extra_args,
        ]

    def start(self) -> LocalTriton:
        """Starts the server and waits for readiness; raises with the log tail on failure.

        After a crash, starts it again on the same ports (what was left of the crashed
        one, its stubs and shared memory, is removed first).
        """
        if self.running:
            return self
        # Once it has served, it keeps its ports: clients were given these URLs.
        restart = self.startup_s is not None
        self.stop()
        remove_stale_shm()
        if not (self.repository / ".build-stamp.json").is_file() and not any(
            self.repository.glob("*/config.pbtxt")
        ):
            raise ConfigurationError(
                f"local Triton: {self.repository} is not a model repository; run `dfd models build`"
            )
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._launch(new_ports=not restart)
                break
            except UpstreamUnavailableError as exc:
                # A free port can be taken by someone else before the server binds it
                # (on a restart: the same ports again, a moment later).
                if "already in use" not in str(exc) or attempt == PORT_ATTEMPTS - 1:
                    raise
                time.sleep(0.0 if not restart else 1.0)
        return self

    def _launch(self, new_ports: bool = True) -> None:
        if new_ports:
            self.http_port, self.grpc_port, self.metrics_port = (free_port() for _ in range(3))
        log_dir = Path(tempfile.mkdtemp(prefix="dfd-triton-"))
        self._log_path = log_dir / "tritonserver.log"
        started = time.monotonic()
        with self._log_path.open("wb") as log_file:
            # Own session, so stop() can signal the server and its python stubs together.
            self._process = subprocess.Popen(
                die_with_parent(self.command()),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=server_env(),
                start_new_session=True,
            )
        if self.watchdog is not None:
            self.watchdog.watch(self._process.pid)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        url = f"{self.http_url}/v2/health/ready"
        while True:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                raise UpstreamUnavailableError(
                    self._failure(f"tritonserver exited with code {code} while starting")
                )
            with (
                contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
                urllib.request.urlopen(url, timeout=1.0) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() - started > self.ready_timeout_s:
                raise UpstreamUnavailableError(
                    self._failure(f"not ready after {self.ready_timeout_s:.0f} s at {url}")
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_S)
        # Python stubs left behind by a killed server share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if self.watchdog is not None:
            self.watchdog.forget(process.pid)
        _wait_group_gone(process.pid, STOP_TIMEOUT_S)
        remove_stale_shm()
        if self._log_path is not None:
            shutil.rmtree(self._log_path.parent, ignore_errors=True)
            self._log_path = None

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
