"""Health, readiness, metrics, auth, and the OpenAPI document."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from dfd.ports import free_port
from gateway.app import create_app

pytestmark = pytest.mark.integration

PUBLIC = "http://93.184.216.34/clip.mp4"


def test_healthz_and_readyz(gateway) -> None:
    with gateway() as client:
        assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"redis": "ok"}


def test_readyz_is_503_without_redis(make_settings) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(create_app(make_settings(redis_url=dead), Redis.from_url(dead))) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["redis"].startswith("unavailable")


def test_readyz_checks_triton_when_configured(gateway) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        up = f"127.0.0.1:{listener.getsockname()[1]}"
        with gateway(triton_url=up) as client:
            assert client.get("/readyz").json()["checks"] == {"redis": "ok", "triton": "ok"}
    with gateway(triton_url=f"127.0.0.1:{free_port()}") as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["triton"] == "unavailable"


def test_metrics_count_requests_jobs_and_rejections(gateway) -> None:
    with gateway() as client:
        client.post("/api/analyze", json={"url": PUBLIC})
        client.post("/api/analyze", json={"url": "http://127.0.0.1/"})
        client.get("/api/job/" + "z" * 32)
        text = client.get("/metrics").text
    assert 'dfd_jobs_enqueued_total{priority="default",source="url"} 1.0' in text
    assert 'dfd_requests_rejected_total{type="rejected-url"} 1.0' in text
    assert (
        'dfd_http_requests_total{method="GET",route="/api/job/{job_id}",status="404"} 1.0' in text
    )
    assert 'dfd_http_request_duration_seconds_count{method="POST",route="/api/analyze"} 2.0' in text


def test_made_up_methods_share_one_metrics_label(gateway) -> None:
    # Each method a client invents would otherwise add a counter and ~20 histogram series.
    with gateway() as client:
        for method in ("PROPFIND", "MKCOL", "X-SPRAY-1", "X-SPRAY-2"):
            client.request(method, "/api/job/" + "z" * 32)
        text = client.get("/metrics").text
    assert "PROPFIND" not in text and "X-SPRAY" not in text
    assert (
        'dfd_http_requests_total{method="other",route="/api/job/{job_id}",status="405"} 4.0' in text
    )


def test_bearer_keys(gateway) -> None:
    with gateway(api_keys=["s3cret-key-one-16+", "s3cret-key-two-16+"]) as client:
        response = client.post("/api/analyze", json={"url": PUBLIC})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["type"] == "urn:dfd:problem:unauthorized"
        bad = {"Authorization": "Bearer nope"}
        assert client.post("/api/analyze", json={"url": PUBLIC}, headers=bad).status_code == 401
        assert client.get("/api/job/" + "q" * 32, headers=bad).status_code == 401
        good = {"Authorization": "Bearer s3cret-key-two-16+"}
        assert client.post("/api/analyze", json={"url": PUBLIC}, headers=good).status_code == 202
        assert client.get("/healthz").status_code == 200


def test_wrong_keys_cost_quota_so_keys_cannot_be_guessed_without_limit(gateway) -> None:
    with gateway(api_keys=["the-one-right-key-0123"], rate_limit_per_hour=3) as client:
        bad = {"Authorization": "Bearer guess"}
        answers = [
            client.post("/api/analyze", json={"url": PUBLIC}, headers=bad).status_code
            for _ in range(3)
        ]
        answers += [client.get("/api/job/" + "q" * 32, headers=bad).status_code for _ in range(2)]
    assert answers == [401, 401, 401, 429, 429]


def test_short_api_keys_are_refused_at_start_up() -> None:
    from pydantic import ValidationError

    from dfd.settings import Settings

    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(api_keys=["short-key"])


def test_unknown_route_is_a_problem(gateway) -> None:
    with gateway() as client:
        response = client.get("/api/nothing")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert client.delete("/api/analyze").status_code == 405


def test_openapi_documents_every_response(gateway) -> None:
    with gateway() as client:
        doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    upload = paths["/api/upload"]["post"]
    assert {"202", "400", "401", "413", "415", "429"} <= set(upload["responses"])
    assert "multipart/form-data" in upload["requestBody"]["content"]
    analyze = paths["/api/analyze"]["post"]["responses"]
    assert {"202", "400", "422", "429"} <= set(analyze)
    job = paths["/api/job/{job_id}"]["get"]["responses"]
    assert {"200", "404"} <= set(job)
    assert job["404"]["content"]["application/problem+json"]["schema"]["$ref"].endswith("/Problem")
    assert "JobView" in doc["components"]["schemas"]
