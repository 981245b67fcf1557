"""``dfd exporter``: Prometheus metrics of the queues, workers and jobs, read from Redis.

One per Redis (see :mod:`dispatcher.metrics` for what it reports and why it is one
process and not a ``/metrics`` per worker).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Any


def _handle(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server
    from redis import Redis

    from dfd.errors import ConfigurationError
    from dfd.logs import configure_logging
    from dfd.settings import Settings
    from dispatcher.metrics import JobSystemCollector, exporter_registry

    settings = Settings()
    configure_logging(settings)
    if not settings.redis_url:
        raise ConfigurationError("exporter: expected DFD_REDIS_URL, got none")
    connection = Redis.from_url(
        settings.redis_url, socket_timeout=args.redis_timeout_s, socket_connect_timeout=2
    )
    triton_ready = None
    if settings.triton_url:
        from dispatcher.triton_client import TritonClient

        triton = TritonClient(settings.triton_url, timeout_s=args.triton_timeout_s, retries=0)
        triton_ready = triton.is_ready
    collector = JobSystemCollector(connection, triton_ready=triton_ready)
    registry = exporter_registry(collector)
    # The first read sets where counting starts: jobs ended before now are not counted.
    registry.collect()
    server, thread = start_http_server(args.port, addr=args.host, registry=registry)
    print(f"dfd exporter: http://{args.host}:{server.server_port}/metrics", file=sys.stderr)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopped.wait()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "exporter",
        help="serve Prometheus metrics of the queues, workers and jobs (one per Redis)",
        description=(
            "Serve /metrics with the queue depths, workers, job durations, stage times and "
            "errors, read from Redis (DFD_REDIS_URL) at each scrape; Triton's readiness too "
            "when DFD_TRITON_URL is set."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9120, help="port to listen on (0: any free)")
    parser.add_argument(
        "--redis-timeout-s", type=float, default=5.0, help="deadline of one Redis read"
    )
    parser.add_argument(
        "--triton-timeout-s", type=float, default=2.0, help="deadline of the Triton ready check"
    )
    parser.set_defaults(handler=_handle)
