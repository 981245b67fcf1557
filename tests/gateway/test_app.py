"""The app factory: the async Redis client reaches the same server, the same way, as the sync one."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.connection import SSLConnection

from dfd.ports import free_port
from dfd.settings import Settings
from gateway.app import _url_of, create_app


@pytest.mark.unit
@pytest.mark.parametrize(
    "url",
    [
        "redis://:a%2Fb%40c%3Ad@127.0.0.1:6390/2",
        "redis://us%3Aer:p%23w@127.0.0.1:6390/0",
        "rediss://:secret@127.0.0.1:6390/1",
    ],
)
def test_async_url_of_a_client_keeps_credentials_and_tls(url: str) -> None:
    sync = Redis.from_url(url)
    pool = AsyncRedis.from_url(_url_of(sync)).connection_pool
    for key in ("host", "port", "db", "username", "password"):
        assert pool.connection_kwargs.get(key) == sync.connection_pool.connection_kwargs.get(key)
    assert (pool.connection_class is SSLConnection) == url.startswith("rediss://")


@pytest.mark.unit
def test_app_starts_with_a_password_that_needs_quoting(tmp_path: Path) -> None:
    """A password with '/' in DFD_REDIS_URL must not stop the gateway from starting."""
    url = f"rediss://:a%2Fb@127.0.0.1:{free_port()}/0"  # nobody listens: start-up only warns
    settings = Settings(data_dir=tmp_path, redis_url=url, url_signing_key="k" * 32)
    with TestClient(create_app(settings)) as client:
        pool = client.app.state.gateway.aredis.connection_pool  # type: ignore[attr-defined]
        assert pool.connection_kwargs["password"] == "a/b"
        assert pool.connection_class is SSLConnection


@pytest.mark.unit
def test_a_redis_that_never_answers_gets_503_within_the_timeout(tmp_path: Path) -> None:
    """A server that accepts connections and stays silent: polls fail fast, not after 120 s."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    settings = Settings(
        data_dir=tmp_path, redis_url=url, url_signing_key="k" * 32, redis_timeout_s=0.5
    )
    try:
        with TestClient(create_app(settings)) as client:
            started = time.monotonic()
            response = client.get("/api/job/0123456789abcdef0123456789abcdef")
            elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert elapsed < 5
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.integration
def test_openapi_declares_the_bearer_scheme_and_the_url_pattern(gateway) -> None:
    with gateway(api_keys=["k" * 24]) as client:
        schema = client.get("/openapi.json").json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert schema["paths"]["/api/job/{job_id}"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]
        pattern = schema["components"]["schemas"]["AnalyzeRequest"]["properties"]["url"]["pattern"]
        # What the schema refuses, validation refuses, with a message to act on.
        for url in ("0", "P:"):
            response = client.post(
                "/api/analyze", json={"url": url}, headers={"Authorization": "Bearer " + "k" * 24}
            )
            assert response.status_code == 400
            assert response.json()["detail"] == (
                f"url: expected an absolute URL like https://host/path, got {url!r}"
            )
        assert pattern
    with gateway() as client:
        open_schema = client.get("/openapi.json").json()
        assert open_schema["paths"]["/api/job/{job_id}"]["get"]["security"] == [{"bearer": []}, {}]
