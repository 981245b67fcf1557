"""POST /api/analyze: URL syntax (400), policy and SSRF (422), enqueue (202)."""

from __future__ import annotations

import socket

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from dfd.ports import free_port

pytestmark = pytest.mark.integration

# A public address literal: passes the SSRF check without DNS; nothing connects to it
# (the reachability check is off by default).
PUBLIC = "http://93.184.216.34/clip.mp4"


def _queued(redis) -> int:
    return sum(redis.llen(f"rq:queue:{q}") for q in ("high", "default", "low"))


def test_public_url_is_enqueued(gateway, redis) -> None:
    with gateway() as client:
        response = client.post("/api/analyze", json={"url": PUBLIC, "priority": "low"})
        assert response.status_code == 202, response.text
        job_id = response.json()["jobId"]
        assert response.headers["location"] == f"/api/job/{job_id}"
    job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    assert job.origin == "low"
    assert job.args[0]["source"] == {"kind": "url", "url": PUBLIC, "path": None, "filename": None}


@pytest.mark.parametrize(
    "url", ["not a url", "example.org/video.mp4", "http://", "http://host:99999/"]
)
def test_malformed_url_is_400(gateway, redis, url) -> None:
    with gateway() as client:
        response = client.post("/api/analyze", json={"url": url})
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == "urn:dfd:problem:invalid-request"
    assert _queued(redis) == 0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.216.34/a.mp4",
        "file:///etc/passwd",
        "http://127.0.0.1:6379/",
        "http://localhost/a.mp4",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/a.mp4",
        "http://10.0.0.8/a.mp4",
        "http://2130706433/a.mp4",
        "http://user:pw@93.184.216.34/a.mp4",
    ],
)
def test_rejected_url_is_422(gateway, redis, url) -> None:
    with gateway() as client:
        response = client.post("/api/analyze", json={"url": url})
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "urn:dfd:problem:rejected-url"
    assert _queued(redis) == 0


def test_name_resolving_to_a_private_address_is_422(gateway, redis) -> None:
    # This machine's own name resolves (through /etc/hosts) to a loopback or private address.
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    if not addresses:
        pytest.skip("hostname does not resolve here")
    with gateway() as client:
        response = client.post("/api/analyze", json={"url": f"http://{name}/clip.mp4"})
        assert response.status_code == 422, response.text
    assert _queued(redis) == 0


def test_allow_and_block_lists(gateway, redis) -> None:
    with gateway(url_blocklist=["93.184.216.34"]) as client:
        assert client.post("/api/analyze", json={"url": PUBLIC}).status_code == 422
    with gateway(url_allowlist=["videos.example.org"]) as client:
        assert client.post("/api/analyze", json={"url": PUBLIC}).status_code == 422
    assert _queued(redis) == 0


def test_reachability_check_refuses_a_closed_port(gateway, redis) -> None:
    # Loopback is exempted from the SSRF check here so the reachability check is what refuses.
    port = free_port()  # nothing listens there
    with gateway(check_url_reachable=True, fetch_allowed_networks=["127.0.0.0/8"]) as client:
        response = client.post("/api/analyze", json={"url": f"http://127.0.0.1:{port}/a.mp4"})
        assert response.status_code == 422
        assert "accept connections" in response.json()["detail"]
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen()
            open_port = server.getsockname()[1]
            response = client.post(
                "/api/analyze", json={"url": f"http://127.0.0.1:{open_port}/a.mp4"}
            )
            assert response.status_code == 202
    assert _queued(redis) == 1


@pytest.mark.parametrize(
    "body", [{}, {"url": 5}, {"url": PUBLIC, "priority": "urgent"}, {"url": PUBLIC, "x": 1}]
)
def test_bad_body_is_400(gateway, redis, body) -> None:
    with gateway() as client:
        assert client.post("/api/analyze", json=body).status_code == 400
    assert _queued(redis) == 0


def test_redis_down_is_503_and_nothing_is_half_done(make_settings) -> None:
    from fastapi.testclient import TestClient
    from redis import Redis

    from gateway.app import create_app

    dead = f"redis://127.0.0.1:{free_port()}/0"
    # Without limits the enqueue is what fails; with them, the limiter fails first.
    for limit in (0, 100):
        settings = make_settings(
            redis_url=dead, rate_limit_per_hour=limit, rate_limit_analyze_per_hour=limit
        )
        app = create_app(settings, Redis.from_url(dead))
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.post("/api/analyze", json={"url": PUBLIC})
            assert response.status_code == 503
            assert response.json()["type"] == "urn:dfd:problem:upstream-unavailable"
            assert client.get("/api/job/" + "a" * 32).status_code == 503
            assert client.post("/api/upload", files={"file": ("a.mpg", b"x")}).status_code == 503


def test_oversized_body_is_413(gateway, redis) -> None:
    """The body is a few hundred bytes of JSON: a multi-megabyte one, declared or
    streamed, is refused with 413 rather than buffered whole and parsed (that it stops
    reading early is in test_bodylimit.py: the test client sends the whole body first)."""
    huge = b'{"url": "' + PUBLIC.encode() + b"?" + b"a" * 8_000_000 + b'"}'

    def chunks():
        for i in range(0, len(huge), 65536):
            yield huge[i : i + 65536]

    with gateway() as client:
        for content in (huge, chunks()):
            response = client.post(
                "/api/analyze", content=content, headers={"content-type": "application/json"}
            )
            assert response.status_code == 413, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "urn:dfd:problem:too-large"
        # A normal body still goes through.
        assert client.post("/api/analyze", json={"url": PUBLIC}).status_code == 202
    assert _queued(redis) == 1


def test_a_name_slow_to_resolve_answers_503_in_time_and_spares_the_uploads(
    gateway, redis, monkeypatch, grid_clip
) -> None:
    # Resolution ran on the gateway's shared thread pool without a deadline: names on a
    # slow DNS server held the threads uploads and enqueues need, for as long as it took.
    import threading
    import time

    from gateway.routes import analyze as analyze_route

    release = threading.Event()

    def slow(host, port, settings):
        release.wait(10)
        return []

    monkeypatch.setattr(analyze_route, "resolve_and_vet", slow)
    try:
        with gateway(fetch_connect_timeout_s=0.3) as client:
            started = time.monotonic()
            response = client.post("/api/analyze", json={"url": "http://slow.example/v.mp4"})
            assert time.monotonic() - started < 3
            assert response.status_code == 503, response.text
            assert response.json()["type"] == "urn:dfd:problem:fetch-failed"
            assert "took longer than 0.3 s" in response.json()["detail"]
            # every resolver thread stuck: uploads still go through
            for _ in range(analyze_route._DNS_THREADS):
                client.post("/api/analyze", json={"url": "http://slow.example/v.mp4"})
            upload = client.post("/api/upload", files={"file": ("a.mpg", grid_clip.read_bytes())})
            assert upload.status_code == 202, upload.text
    finally:
        release.set()
    assert _queued(redis) == 1
