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


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (
            b'{"url": "http://a.b/x", "priority": }',
            "application/json",
            "request: expected the body to be JSON, got invalid JSON at character 36 "
            "(Expecting value)",
        ),
        (
            b'{"url": "http://a.b/x"}',
            "text/plain",
            "request: expected a JSON body with Content-Type: application/json, got text/plain",
        ),
        (
            b"[1, 2]",
            "application/json",
            "request: expected the body to be a JSON object, got another JSON value",
        ),
    ],
)
def test_a_body_that_is_not_a_json_object_is_explained(gateway, body, content_type, detail) -> None:
    with gateway() as client:
        response = client.post("/api/analyze", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == detail


@pytest.mark.integration
def test_callback_url_needs_a_webhook_secret_and_passes_the_ssrf_checks(gateway, redis) -> None:
    body = {"url": "http://93.184.216.34/a.mp4", "callback_url": "http://127.0.0.1:9/hook"}
    nets = ["93.184.216.0/24"]
    with gateway(fetch_allowed_networks=nets) as client:
        response = client.post("/api/analyze", json=body)
        assert response.status_code == 400
        assert "DFD_WEBHOOK_SECRET" in response.json()["detail"]
    with gateway(fetch_allowed_networks=nets, webhook_secret="w" * 32) as client:
        response = client.post("/api/analyze", json=body)
        assert response.status_code == 422, response.text
        assert "127.0.0.1" in response.json()["detail"]
        upload = client.post(
            "/api/upload",
            files={"file": ("a.webm", b"\x1a\x45\xdf\xa3" + b"\0" * 64)},
            data={"callback_url": "http://10.0.0.1/hook"},
        )
        assert upload.status_code == 422, upload.text
        assert list(client.settings.uploads_dir.iterdir()) == [], "the refused upload was kept"
    assert redis.llen("rq:queue:default") == 0, "a refused request enqueued a job"
