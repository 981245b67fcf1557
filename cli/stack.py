"""The whole service on one machine: ``dfd serve`` and ``dfd demo``.

:class:`Stack` starts, in this order, a local Redis (unless ``DFD_REDIS_URL`` is set), a
local Triton on the repository rendering of ``DFD_TRITON_TARGET`` (unless
``DFD_TRITON_URL`` is set; the repository is built first when it is missing), a
``dfd exporter`` (when given a port: ``dfd serve`` does, 9120 unless told otherwise), N
``dfd worker`` processes and one ``dfd gateway`` process. The children learn the
resolved addresses through the environment (``DFD_REDIS_URL``, ``DFD_TRITON_URL``,
``DFD_DATA_DIR``, ``DFD_PUBLIC_BASE_URL``), so each builds the same settings. It stops
in the reverse order: gateway and workers, then Triton, then Redis.

While it runs, :meth:`Stack.supervise` restarts whatever ends (a worker, the gateway,
the local Redis, the local Triton, the exporter; the servers on their old ports, so the
URLs the children hold stay right) with backoff, and gives up only on a crash loop. Each
restart is counted in Redis by process kind (:class:`dispatcher.metrics.RestartCounter`),
which the exporter serves as ``dfd_supervisor_restarts_total``. A
:class:`cli.supervisor.Watchdog` and parent-death signals make sure nothing it started
outlives it, even when it is killed with SIGKILL.

Light imports only (stdlib, httpx, the settings): everything heavy runs in the
children.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from cli.local import dfd_command, start_triton
from cli.local_redis import LocalRedis, start_redis
from cli.local_triton import LocalTriton
from cli.supervisor import (
    BackgroundRestart,
    GaveUp,
    ProcessGroup,
    RestartPolicy,
    Supervisor,
    Watchdog,
)
from dfd.errors import ConfigurationError, UpstreamUnavailableError
from dfd.ports import free_port, port_is_free
from dfd.settings import Settings, load_settings

GATEWAY_READY_TIMEOUT_S = 60.0
EXPORTER_PORT = 9120
"""``dfd serve``'s exporter port unless ``--exporter-port`` says otherwise (as ``dfd exporter``'s)."""


@dataclass(frozen=True)
class Endpoints:
    """Where the running stack can be reached."""

    gateway: str
    redis: str
    triton_grpc: str
    triton_http: str | None
    evidence_dir: Path | None
    redis_local: bool
    triton_local: bool
    exporter: str | None = None


def gateway_url(host: str, port: int) -> str:
    """The URL a gateway bound to ``host:port`` is reached at from this machine."""
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in public_host:  # an IPv6 literal
        public_host = f"[{public_host}]"
    return f"http://{public_host}:{port}"


class Stack:
    """Redis, Triton, workers and the gateway, started and stopped as one.

    Args:
        settings: This process's settings; the children rebuild theirs from the environment.
        host: Address the gateway binds.
        port: Gateway port (0: a free one).
        workers: Number of ``dfd worker`` processes.
        child_output: Where the children's stdout and stderr go (``None``: inherited).
        log: Prints one line of progress.
        stop_timeout_s: Grace period for the children after SIGTERM.
        restart_policy: Backoff between restarts and when to give up (default
            :class:`RestartPolicy`'s).
        exporter_port: Port of a ``dfd exporter`` on ``host`` (0: a free one); ``None``:
            no exporter.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        workers: int = 1,
        child_output: IO[bytes] | None = None,
        log: Callable[[str], None] = print,
        stop_timeout_s: float = 10.0,
        restart_policy: RestartPolicy | None = None,
        exporter_port: int | None = None,
    ) -> None:
        if workers < 0:
            raise ConfigurationError(f"dfd serve: expected 0 or more workers, got {workers}")
        self.settings = settings
        self.host = host
        self.port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.workers = workers
        if exporter_port is not None and not 0 <= exporter_port <= 65535:
            raise ConfigurationError(
                f"dfd serve: expected an exporter port from 0 to 65535, got {exporter_port}"
            )
        loopback = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        self.exporter_port = exporter_port if exporter_port != 0 else free_port(loopback)
        self.child_output = child_output
        self.log = log
        self.restart_policy = restart_policy or RestartPolicy()
        self.watchdog = Watchdog(grace_s=stop_timeout_s)
        self.group = ProcessGroup(stop_timeout_s=stop_timeout_s, watchdog=self.watchdog)
        self.redis: LocalRedis | None = None
        self.triton: LocalTriton | None = None
        self.endpoints: Endpoints | None = None
        self._exit = contextlib.ExitStack()

    # -- start ---------------------------------------------------------------------------
    def start(self) -> Endpoints:
        """Start everything and wait for the gateway to answer; stops what it started on failure."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        # Otherwise another server already on the port answers /healthz and passes for ours.
        if not port_is_free(self.host, self.port):
            raise ConfigurationError(
                f"dfd serve: expected port {self.port} on {self.host} to be free for the "
                "gateway, got it in use (choose another with --port)"
            )
        if self.exporter_port is not None and not port_is_free(self.host, self.exporter_port):
            raise ConfigurationError(
                f"dfd serve: expected port {self.exporter_port} on {self.host} to be free for "
                "the exporter, got it in use (choose another with --exporter-port, or "
                "--no-exporter)"
            )
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._exit.callback(self.watchdog.close)  # last: after everything it watches stopped
        self.watchdog.start()
        redis_url, redis_local = self._start_redis()
        triton_grpc, triton_http, triton_local = self._start_triton()

        url = gateway_url(self.host, self.port)
        env = dict(os.environ)
        env.update(
            DFD_DATA_DIR=str(data_dir),
            DFD_REDIS_URL=redis_url,
            DFD_TRITON_URL=triton_grpc,
        )
        if "public_base_url" not in self.settings.model_fields_set:
            env["DFD_PUBLIC_BASE_URL"] = url

        out = self.child_output
        self._exit.callback(self._stop_children)
        exporter = None
        if self.exporter_port is not None:
            # Before the workers: it counts the jobs that end after its first read.
            exporter = gateway_url(self.host, self.exporter_port)
            self.group.start(
                "exporter",
                dfd_command("exporter", "--host", self.host, "--port", str(self.exporter_port)),
                env=env,
                stdout=out,
                stderr=out,
            )
            self._wait_ready("exporter", f"{exporter}/metrics")
        for index in range(self.workers):
            self.group.start(
                f"worker-{index + 1}", dfd_command("worker"), env=env, stdout=out, stderr=out
            )
        self.group.start(
            "gateway",
            dfd_command("gateway", "--host", self.host, "--port", str(self.port)),
            env=env,
            stdout=out,
            stderr=out,
        )
        self._wait_ready("gateway", f"{url}/healthz")
        self.endpoints = Endpoints(
            gateway=url,
            redis=redis_url,
            triton_grpc=triton_grpc,
            triton_http=triton_http,
            evidence_dir=(data_dir / "evidence") if self.settings.store == "local" else None,
            redis_local=redis_local,
            triton_local=triton_local,
            exporter=f"{exporter}/metrics" if exporter else None,
        )
        return self.endpoints

    def _start_redis(self) -> tuple[str, bool]:
        url, redis = start_redis(self.settings, self.log, self.watchdog)
        if redis is not None:
            self._exit.callback(redis.stop)
            self.redis = redis
        return url, redis is not None

    def _start_triton(self) -> tuple[str, str | None, bool]:
        url, triton = start_triton(self.settings, self.log, self.watchdog)
        if triton is None:
            return url, None, False
        self._exit.callback(triton.stop)
        self.triton = triton
        return url, triton.http_url, True

    def _wait_ready(self, name: str, url: str) -> None:
        deadline = time.monotonic() + GATEWAY_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            ended = self.group.exited()
            if ended:
                raise UpstreamUnavailableError(
                    f"dfd serve: expected every child to keep running, got {ended[0].name} "
                    f"exiting with status {ended[0].returncode} during start-up"
                )
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise UpstreamUnavailableError(
            f"dfd serve: expected the {name} to answer on {url} within "
            f"{GATEWAY_READY_TIMEOUT_S:.0f} s, got no answer"
        )

    # -- run and stop --------------------------------------------------------------------
    def supervise(self, poll_s: float = 0.5) -> GaveUp:
        """Restart whatever ends, until one child crashes too often too fast; that one."""
        from redis import Redis

        from dispatcher.metrics import RestartCounter

        assert self.endpoints is not None, "supervise() after start()"
        # Short timeouts: the count is written from the supervisor's loop.
        connection = Redis.from_url(
            self.endpoints.redis, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._exit.callback(connection.close)
        supervisor = Supervisor(
            self.restart_policy, log=self.log, on_restart=RestartCounter(connection)
        )
        if self.redis is not None:
            redis = self.redis
            supervisor.watch("redis", lambda: redis.returncode, redis.start)
        if self.triton is not None:
            triton = self.triton

            def restart_triton() -> None:
                # Its log goes with the restart: say why it ended first.
                if errors := triton.errors():
                    self.log(f"triton's last errors:\n{errors}")
                triton.start()

            # In a thread: its start waits for readiness, and the others must not wait.
            background = BackgroundRestart(
                "triton", lambda: triton.returncode, restart_triton, self.log
            )
            self._exit.callback(background.join, 10.0)  # before Triton is stopped
            supervisor.watch("triton", background.returncode, background.restart)
        supervisor.watch_group(self.group)
        gave_up = supervisor.run(poll_s=poll_s)
        assert gave_up is not None  # run() without `until` returns only when it gives up
        return gave_up

    def _stop_children(self) -> None:
        self.group.stop()

    def stop(self) -> None:
        """Stop gateway and workers, then Triton, then Redis. Safe to call twice."""
        with signals_deferred():
            self._exit.close()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Shutdown(Exception):
    """Raised in the main thread by SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_signals_handled_by(
    handler: Callable[[int, FrameType | None], Any] | signal.Handlers,
) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM in the block; the previous handlers restored after."""
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def signals_raise_shutdown() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Shutdown` in the block; previous handlers restored after."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Shutdown(signum)

    with _stop_signals_handled_by(handler):
        yield


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while stopping, so a second Ctrl-C cannot orphan children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _stop_signals_handled_by(signal.SIG_IGN):
        yield


def describe(endpoints: Endpoints, workers: int) -> list[str]:
    """The lines ``dfd serve`` prints once everything is up."""
    lines = [
        f"  gateway   {endpoints.gateway}  (POST /api/upload, POST /api/analyze, GET /api/job/{{id}})",
        f"  redis     {endpoints.redis}{'  (local)' if endpoints.redis_local else ''}",
        f"  triton    grpc {endpoints.triton_grpc}"
        + (f", http {endpoints.triton_http}" if endpoints.triton_http else "")
        + ("  (local)" if endpoints.triton_local else ""),
        f"  workers   {workers}",
        *([f"  metrics   {endpoints.exporter}  (dfd exporter)"] if endpoints.exporter else []),
        f"  page      {endpoints.gateway}/  (upload a video or paste a URL; results at /r/<job id>)",
        f"  console   {endpoints.gateway}/console  (needs DFD_ADMIN_KEYS)",
        f"  API docs  {endpoints.gateway}/docs",
    ]
    if endpoints.evidence_dir is not None:
        lines.append(f"  evidence  {endpoints.evidence_dir}")
    return lines


def serve(args: argparse.Namespace) -> int:
    settings = load_settings()

    def log(line: str) -> None:
        print(f"dfd serve: {line}", flush=True)

    stack = Stack(
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log=log,
        exporter_port=None if args.no_exporter else args.exporter_port,
    )
    status = 0
    try:
        with signals_raise_shutdown():
            endpoints = stack.start()
            log("ready")
            print("\n".join(describe(endpoints, args.workers)), flush=True)
            log("Ctrl-C stops everything")
            log(str(stack.supervise()))
            status = 1
    except Shutdown as exc:
        log(f"{exc} received; stopping")
    finally:
        stack.stop()
    log("stopped")
    return status


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the whole service on this machine",
        description="Start a local Redis and Triton (unless DFD_REDIS_URL / DFD_TRITON_URL "
        "are set), the metrics exporter, N workers and the gateway; restart any that ends (giving up after "
        "repeated fast crashes); Ctrl-C stops them all.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address the gateway binds (default %(default)s)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="gateway port, 0 for a free one (default %(default)s)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default %(default)s)")
    p.add_argument(
        "--exporter-port",
        type=int,
        default=EXPORTER_PORT,
        help="port of dfd exporter's /metrics, on the gateway's host; 0 for a free one "
        "(default %(default)s)",
    )
    p.add_argument("--no-exporter", action="store_true", help="do not start dfd exporter")
    p.set_defaults(handler=serve)
