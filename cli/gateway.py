"""``dfd gateway``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from cli.local_redis import start_redis

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_folder(workers: int) -> tuple[Path | None, bool]:
    """Set up prometheus-client's multiprocess folder for ``workers`` uvicorn processes.

    With one process there is none. With several, ``PROMETHEUS_MULTIPROC_DIR`` if set
    (emptied: values of an earlier run would be added to this one's), else a fresh
    temporary folder; it goes to the environment before uvicorn starts the processes,
    since prometheus-client reads it when it is imported. Returns the folder and
    whether it is ours to remove.
    """
    if workers <= 1 and not os.environ.get(MULTIPROC_ENV):
        return None, False
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        return folder, False
    folder = Path(tempfile.mkdtemp(prefix="dfd-gateway-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder, True


def _handle(args: argparse.Namespace) -> int:
    import uvicorn

    from dfd.settings import load_settings
    from gateway.protocol import GuardedHttpToolsProtocol, HeadLimits

    settings = load_settings()
    # uvicorn re-raises SIGTERM after its graceful shutdown; exit through Python then, so
    # the local Redis below is stopped (and its AOF flushed) instead of left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # No Redis configured: run one under data_dir, as `dfd serve` does. The URL goes to
    # the environment so each uvicorn worker process builds the same settings.
    url, local = start_redis(settings, lambda line: print(f"dfd gateway: {line}", file=sys.stderr))
    os.environ["DFD_REDIS_URL"] = url
    folder, ours = metrics_folder(args.workers)
    try:
        uvicorn.run(
            "gateway.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            # httptools with limits on each request's head (431 / 408).
            http=partial(GuardedHttpToolsProtocol, limits=HeadLimits.from_settings(settings)),  # type: ignore[arg-type]
            loop="uvloop",
            access_log=False,
            timeout_keep_alive=30,
            log_level=settings.log_level.lower(),
            proxy_headers=False,  # the gateway decides which proxies to believe (trusted_proxies)
        )
    finally:
        if ours and folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
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
