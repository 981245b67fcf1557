"""A loopback HTTP server for tests: `MediaServer` for the fetch and yt-dlp tests (the tests
that only need real files behind a URL use `benchmarks.folder_server.serve_folder`).

MediaServer's routes map a path to a function returning ``(status, headers, body)``; a
body may be bytes or an iterator of bytes (streamed without Content-Length). Every request
is logged with its path and ``Host`` header, so a test can assert what did (or did not)
arrive.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = tuple[int, dict[str, str], bytes | Iterable[bytes]]
Route = Callable[["Seen"], Reply]


@dataclass(frozen=True)
class Seen:
    path: str
    host: str | None
    headers: dict[str, str] = field(default_factory=dict)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-request are part of the tests


class MediaServer:
    """``with MediaServer() as server: server.route("/a", fn); server.url("/a")``."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.server_names: list[str | None] = []  # TLS SNI names clients sent
        self.scheme = "https" if tls else "http"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                seen = Seen(path, self.headers.get("Host"), dict(self.headers.items()))
                owner.seen.append(seen)
                route = owner.routes.get(path)
                if route is None:
                    status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
                else:
                    status, headers, body = route(seen)
                self.send_response(status)
                streamed = not isinstance(body, bytes)
                for name, value in headers.items():
                    self.send_header(name, value)
                if streamed:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                elif "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if streamed:
                        for chunk in body:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up (byte cap): expected

            def log_message(self, *args: object) -> None:
                pass

        self._server = _QuietServer((host, 0), Handler)
        self.port = self._server.server_address[1]
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def route(self, path: str, reply: Route) -> None:
        self.routes[path] = reply

    def file(self, path: str, data: bytes, content_type: str = "video/mp4") -> None:
        self.routes[path] = lambda _seen: (200, {"Content-Type": content_type}, data)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = lambda _seen: (status, {"Location": location}, b"")

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def trickle(chunks: int, size: int, delay_s: float = 0.0) -> Iterable[bytes]:
    """A streamed body of ``chunks`` x ``size`` bytes, without Content-Length."""
    for _ in range(chunks):
        if delay_s:
            time.sleep(delay_s)
        yield b"\0" * size
