"""A folder served over HTTP on loopback: real files behind a URL, for the benchmarks that
submit URL jobs (the soak) and the tests that need the same (demo, end to end, chaos)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serve_folder(folder: Path, *, quiet: bool = False) -> Iterator[str]:
    """``folder`` served over HTTP on loopback (``http.server``'s file handler); yields the
    base URL, ``http://127.0.0.1:PORT``.

    Args:
        folder: what is served; ``/name`` is ``folder / name``.
        quiet: no line on stderr per request (a long benchmark's log stays readable).
    """
    base = _QuietHandler if quiet else SimpleHTTPRequestHandler
    handler = functools.partial(base, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
