"""``dfd gateway``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from cli.local_redis import start_redis


def _handle(args: argparse.Namespace) -> int:
    import uvicorn

    from dfd.settings import load_settings

    settings = load_settings()
    # uvicorn re-raises SIGTERM after its graceful shutdown; exit through Python then, so
    # the local Redis below is stopped (and its AOF flushed) instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # No Redis configured: run one under data_dir, as `dfd serve` does. The URL goes to
    # the environment so each uvicorn worker process builds the same settings.
    url, local = start_redis(settings, lambda line: print(f"dfd gateway: {line}", file=sys.stderr))
    os.environ["DFD_REDIS_URL"] = url
    try:
        uvicorn.run(
            "gateway.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            http="httptools",
            loop="uvloop",
            access_log=False,
            timeout_keep_alive=30,
            log_level=settings.log_level.lower(),
            proxy_headers=False,  # the gateway decides which proxies to believe (trusted_proxies)
        )
    finally:
        if local is not None:
            local.stop()
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="serve the HTTP API",
        description="Serve the dfd HTTP API (uvicorn). Settings come from DFD_* variables.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.set_defaults(handler=_handle)
