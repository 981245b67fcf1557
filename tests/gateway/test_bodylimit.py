"""The body cap stops reading a streamed body as soon as it is over."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI, Request

from gateway import errors
from gateway.bodylimit import BodyLimitMiddleware

pytestmark = pytest.mark.unit


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    app.add_middleware(BodyLimitMiddleware, max_bytes=1000, exempt=("/upload",))
    return app


def _call(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    received: list[int] = []
    sent: list[dict] = []
    pending = list(chunks)

    async def receive() -> dict:
        if not pending:
            return {"type": "http.disconnect"}
        body = pending.pop(0)
        received.append(len(body))
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(_app()(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), received


def test_streamed_body_is_refused_after_the_chunk_that_crosses_the_cap() -> None:
    status, headers, received = _call("/echo", [b"x" * 400] * 100, [])
    assert status == 413
    assert headers[b"content-type"] == b"application/problem+json"
    assert len(received) == 3  # 1200 bytes read of 40000


def test_declared_oversize_is_refused_before_reading() -> None:
    status, _, received = _call("/echo", [b"x" * 2000], [(b"content-length", b"2000")])
    assert status == 413
    assert received == []


def test_small_and_exempt_bodies_pass() -> None:
    assert _call("/echo", [b"x" * 500], [(b"content-length", b"500")])[0] == 200
    # The exempt path is not capped here (no such route: 404, but the body was not refused).
    assert _call("/upload", [b"x" * 2000], [(b"content-length", b"2000")])[0] == 404
