"""Problem documents: what a refusal tells the client, and what stays in the logs."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from dfd.ports import free_port
from gateway.app import create_app


@pytest.mark.integration
def test_upstream_failure_does_not_reveal_internal_addresses(make_settings, caplog) -> None:
    port = free_port()
    dead = f"redis://127.0.0.1:{port}/0"
    settings = make_settings(redis_url=dead, rate_limit_per_hour=0, rate_limit_analyze_per_hour=0)
    with TestClient(create_app(settings, Redis.from_url(dead))) as client:
        for response in (
            client.post("/api/analyze", json={"url": "http://93.184.216.34/clip.mp4"}),
            client.get("/api/job/" + "a" * 32),
        ):
            assert response.status_code == 503
            problem = response.json()
            assert problem["type"] == "urn:dfd:problem:upstream-unavailable"
            assert str(port) not in response.text
            assert "127.0.0.1" not in response.text
            assert problem["detail"]
    # The operator still learns what failed, from the log.
    assert any(str(port) in str(getattr(r, "detail", "")) for r in caplog.records)
