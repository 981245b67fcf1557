"""The gateway's limits on a request's head, on a real ``dfd gateway`` (uvicorn,
httptools): too many or too large headers are answered 431, a head that arrives too
slowly 408, before the app runs; ordinary requests and keep-alive are unaffected."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a content-length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return status, headers, body


def _problem(headers: dict[str, str], body: bytes, status: int, slug: str) -> dict:
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    doc = json.loads(body)
    assert doc["status"] == status and doc["type"] == f"urn:dfd:problem:{slug}"
    return doc


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server):
    from dfd.settings import Settings
    from tests.gateway.conftest import GatewayServer

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        redis_url=redis_server.url,
        url_signing_key="k" * 32,
        gateway_max_header_count=20,
        gateway_max_header_bytes=8192,
        gateway_header_timeout_s=3,
    )
    gw = GatewayServer(settings).start()
    yield gw
    gw.stop()


def test_ordinary_requests_and_keep_alive_pass(server) -> None:
    with httpx.Client(base_url=server.url) as http:
        headers = {f"x-h{i}": "v" * 100 for i in range(15)}
        for _ in range(3):  # one connection, three requests
            assert http.get("/healthz", headers=headers).status_code == 200


def test_too_many_headers_are_answered_431(server) -> None:
    with _connect(server) as sock:
        lines = "".join(f"X-H{i}: v\r\n" for i in range(21))
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
        status, headers, body = _read_response(sock)
    assert status == 431
    assert "header lines" in _problem(headers, body, 431, "header-too-large")["detail"]


def test_a_head_too_large_in_one_piece_is_answered_431(server) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
        status, headers, body = _read_response(sock)
    assert status == 431
    assert "bytes" in _problem(headers, body, 431, "header-too-large")["detail"]


def test_a_huge_streamed_header_is_cut_off_without_slowing_the_gateway(server) -> None:
    """A 128 MiB header line used to cost 16 s of CPU and slow /healthz to 5.7 s."""
    answer: list[int] = []

    def flood() -> None:
        with _connect(server) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            sent = 0
            try:
                while sent < 128 * 2**20:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            except OSError:
                pass  # the gateway answered and closed
            try:
                answer.append(_read_response(sock)[0])
            except (OSError, AssertionError):
                answer.append(-1)
            answer.append(sent)

    started = time.monotonic()
    thread = threading.Thread(target=flood)
    thread.start()
    health = httpx.get(server.url + "/healthz", timeout=5)
    thread.join(timeout=30)
    took = time.monotonic() - started
    assert health.status_code == 200
    assert answer and answer[-1] < 8 * 2**20, f"the gateway read {answer[-1]} bytes of one head"
    assert took < 10, f"took {took:.1f} s"


def test_a_slow_head_is_answered_408(server) -> None:
    """A header line every second never completes the head: 408 after the 3 s limit."""
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2)
        status = headers = body = None
        for i in range(10):
            try:
                sock.sendall(f"X-Slow-{i}: v\r\n".encode())
            except OSError:
                break
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                time.sleep(0.8)
                continue
            if peek:
                break
        sock.settimeout(10)
        status, headers, body = _read_response(sock)
        took = time.monotonic() - started
    assert status == 408
    _problem(headers, body, 408, "request-timeout")
    assert 2.5 < took < 6, f"took {took:.1f} s"
