"""The whole service on one machine: ``dfd serve`` and ``dfd demo``.

:class:`Stack` starts, in this order, a local Redis (unless ``DFD_REDIS_URL`` is set), a
local Triton on the repository rendering of ``DFD_TRITON_TARGET`` (unless
``DFD_TRITON_URL`` is set; the repository is built first when it is missing), N
``dfd worker`` processes and one ``dfd gateway`` process. The children learn the
resolved addresses through the environment (``DFD_REDIS_URL``, ``DFD_TRITON_URL``,
``DFD_DATA_DIR``, ``DFD_PUBLIC_BASE_URL``), so each builds the same settings. It stops
in the reverse order: gateway and workers, then Triton, then Redis.

Stdlib and httpx only: everything heavy runs in the children.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from cli.supervisor import Exited, ProcessGroup
from dfd.errors import ConfigurationError, UpstreamUnavailableError
from dfd.ports import free_port, port_is_free

if TYPE_CHECKING:
    from dfd.settings import Settings

# Written last by a repository build (export/triton_repo.py): its presence marks a built rendering.
GATEWAY_READY_TIMEOUT_S = 60.0


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


def dfd_command(*args: str) -> list[str]:
    """``dfd ARGS`` run by this interpreter, so children use the same environment."""
    return [sys.executable, "-m", "cli.main", *args]


def gateway_url(host: str, port: int) -> str:
    """The URL a gateway bound to ``host:port`` is reached at from this machine."""
    public_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in public_host:  # an IPv6 literal
        public_host = f"[{public_host}]"
    return f"http://{public_host}:{port}"


def repository_ready(settings: Settings, target: str) -> bool:
    """Whether the built repository serves the models (and threads) the settings ask for.

    Only a stamp used to be checked: after DFD_VISUAL_MODEL changed, Triton kept serving
    the old model while results named the new one.
    """
    from export.triton_repo import repository_current

    return repository_current(settings, target)  # type: ignore[arg-type]


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
    ) -> None:
        if workers < 0:
            raise ConfigurationError(f"dfd serve: expected 0 or more workers, got {workers}")
        self.settings = settings
        self.host = host
        self.port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.workers = workers
        self.child_output = child_output
        self.log = log
        self.group = ProcessGroup(stop_timeout_s=stop_timeout_s)
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
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        redis_url, redis_local = self._start_redis(data_dir)
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
        self._wait_gateway(url)
        self.endpoints = Endpoints(
            gateway=url,
            redis=redis_url,
            triton_grpc=triton_grpc,
            triton_http=triton_http,
            evidence_dir=(data_dir / "evidence") if self.settings.store == "local" else None,
            redis_local=redis_local,
            triton_local=triton_local,
        )
        return self.endpoints

    def _start_redis(self, data_dir: Path) -> tuple[str, bool]:
        if self.settings.redis_url:
            return self.settings.redis_url, False
        from cli.local_redis import LocalRedis

        self.log(f"starting redis (data in {data_dir / 'redis'})")
        redis = LocalRedis(data_dir / "redis")
        self._exit.callback(redis.stop)
        redis.start()
        return redis.url, True

    def _start_triton(self) -> tuple[str, str | None, bool]:
        if self.settings.triton_url:
            return self.settings.triton_url, None, False
        target = self.settings.triton_target
        if not repository_ready(self.settings, target):
            self._build_repository(target)
        # Light import: the server binary runs as a child of LocalTriton.
        from cli.local_triton import LocalTriton

        self.log(
            f"starting triton ({target} repository {self.settings.repository_dir(target).resolve()})"
        )
        triton = LocalTriton(self.settings, self.settings.repository_dir(target))
        self._exit.callback(triton.stop)
        triton.start()
        return triton.grpc_url, triton.http_url, True

    def _build_repository(self, target: str) -> None:
        self.log(
            f"building the {target} model repository (weights, ONNX export): first run, "
            "or the models changed"
        )
        import subprocess

        env = dict(os.environ, DFD_DATA_DIR=str(self.settings.data_dir.resolve()))
        done = subprocess.run(dfd_command("models", "build", "--target", target), env=env)
        if done.returncode != 0 or not repository_ready(self.settings, target):
            raise ConfigurationError(
                f"dfd serve: expected `dfd models build --target {target}` to build "
                f"{self.settings.repository_dir(target)}, got exit status {done.returncode}"
            )

    def _wait_gateway(self, url: str) -> None:
        import httpx

        deadline = time.monotonic() + GATEWAY_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            ended = self.group.exited()
            if ended:
                raise UpstreamUnavailableError(
                    f"dfd serve: expected every child to keep running, got {ended[0].name} "
                    f"exiting with status {ended[0].returncode} during start-up"
                )
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise UpstreamUnavailableError(
            f"dfd serve: expected the gateway to answer on {url} within "
            f"{GATEWAY_READY_TIMEOUT_S:.0f} s, got no answer"
        )

    # -- run and stop --------------------------------------------------------------------
    def supervise(self, poll_s: float = 0.5) -> Exited:
        """Block until a child exits; that child."""
        while True:
            ended = self.group.wait_any(timeout_s=3600.0, poll_s=poll_s)
            if ended is not None:
                return ended

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
    ]
    if endpoints.evidence_dir is not None:
        lines.append(f"  evidence  {endpoints.evidence_dir}")
    return lines


def serve(args: argparse.Namespace) -> int:
    from dfd.settings import load_settings

    settings = load_settings()

    def log(line: str) -> None:
        print(f"dfd serve: {line}", flush=True)

    stack = Stack(settings, host=args.host, port=args.port, workers=args.workers, log=log)
    status = 0
    try:
        with signals_raise_shutdown():
            endpoints = stack.start()
            log("ready")
            print("\n".join(describe(endpoints, args.workers)), flush=True)
            log("Ctrl-C stops everything")
            ended = stack.supervise()
            log(f"{ended.name} exited with status {ended.returncode}; stopping everything")
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
        "are set), N workers and the gateway; Ctrl-C stops them all.",
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
    p.set_defaults(handler=serve)
