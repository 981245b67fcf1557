"""Tenants through the gateway and a real Redis: a key sees only its tenant's jobs,
both ways; an admin sees all; priorities are capped per tenant; auth errors say what to do."""

from __future__ import annotations

import json

import pytest

from dfd.jobid import new_job_id
from dfd.schemas import JobPayload, JobSource
from gateway.queue import JobQueue

pytestmark = pytest.mark.integration

A, B, ROOT = "a" * 24, "b" * 24, "r" * 24
TENANTS = {
    "acme": {"keys": [A], "max_priority": "default"},
    "bravo": {"keys": [B]},
    "ops": {"keys": [ROOT], "admin": True},
}


def job_of(client, redis, tenant: str) -> str:
    payload = JobPayload(
        job_id=new_job_id(), source=JobSource(kind="url", url="http://93.184.216.34/a.mp4")
    )
    JobQueue(redis, None, client.settings).enqueue(payload, extra_meta={"tenant": tenant})  # type: ignore[arg-type]
    return payload.job_id


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_reads_only_its_tenants_jobs_both_ways(gateway, redis) -> None:
    with gateway(tenants=TENANTS) as client:
        of_a, of_b = job_of(client, redis, "acme"), job_of(client, redis, "bravo")
        for key, own, other in ((A, of_a, of_b), (B, of_b, of_a)):
            assert client.get(f"/api/job/{own}", headers=auth(key)).status_code == 200
            hidden = client.get(f"/api/job/{other}", headers=auth(key))
            assert hidden.status_code == 404
            # Indistinguishable from an unknown id: the other tenant's job is not revealed.
            assert hidden.json()["detail"] == (
                f"job: expected a known job id, got {other!r} (unknown or expired)"
            )
            assert client.get(f"/api/job/{other}/events", headers=auth(key)).status_code == 404
            assert client.delete(f"/api/job/{other}", headers=auth(key)).status_code == 404
        assert client.get(f"/api/job/{of_a}", headers=auth(B)).status_code == 404
        assert client.get(f"/api/job/{of_b}", headers=auth(B)).status_code == 200
        for job_id in (of_a, of_b):
            assert client.get(f"/api/job/{job_id}", headers=auth(ROOT)).status_code == 200


def test_submitted_jobs_belong_to_the_submitting_tenant(gateway, redis) -> None:
    with gateway(tenants=TENANTS, fetch_allowed_networks=["93.184.216.0/24"]) as client:
        response = client.post(
            "/api/analyze", json={"url": "http://93.184.216.34/a.mp4"}, headers=auth(B)
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["jobId"]
        assert client.get(f"/api/job/{job_id}", headers=auth(B)).status_code == 200
        assert client.get(f"/api/job/{job_id}", headers=auth(A)).status_code == 404
        meta = json.loads(redis.hget(f"rq:job:{job_id}", "meta"))
        assert meta["tenant"] == "bravo"
        metrics = client.get("/metrics").text
        assert 'dfd_tenant_jobs_total{source="url",tenant="bravo"} 1.0' in metrics


def test_priority_above_the_tenants_cap_is_refused(gateway, redis) -> None:
    with gateway(tenants=TENANTS, fetch_allowed_networks=["93.184.216.0/24"]) as client:
        response = client.post(
            "/api/analyze",
            json={"url": "http://93.184.216.34/a.mp4", "priority": "high"},
            headers=auth(A),
        )
        assert response.status_code == 403
        assert response.json()["detail"] == (
            "priority: expected at most default for tenant 'acme', got high"
        )
        assert redis.llen("rq:queue:high") == 0


def test_a_key_without_the_bearer_scheme_is_told_so(gateway) -> None:
    with gateway(tenants=TENANTS) as client:
        response = client.get(f"/api/job/{new_job_id()}", headers={"Authorization": A})
    assert response.status_code == 401
    assert "without the 'Bearer ' scheme" in response.json()["detail"]


def test_a_tenants_quota_counts_all_its_keys_and_only_its_own(gateway, redis) -> None:
    tenants = {
        "acme": {"keys": [A, "c" * 24], "analyze_per_hour": 2},
        "bravo": {"keys": [B]},
    }
    body = {"url": "http://93.184.216.34/a.mp4"}
    with gateway(tenants=tenants, fetch_allowed_networks=["93.184.216.0/24"]) as client:
        assert client.post("/api/analyze", json=body, headers=auth(A)).status_code == 202
        assert client.post("/api/analyze", json=body, headers=auth("c" * 24)).status_code == 202
        refused = client.post("/api/analyze", json=body, headers=auth(A))
        assert refused.status_code == 429
        assert "tenant 'acme'" in refused.json()["detail"] and "Retry-After" in refused.headers
        assert client.post("/api/analyze", json=body, headers=auth(B)).status_code == 202
    assert redis.llen("rq:queue:default") == 3


@pytest.mark.slow
def test_the_audit_log_records_who_did_what_and_each_verdicts_models(
    gateway, redis, worker_process
) -> None:
    from tests.dispatcher.test_worker import FAST, finished, wait_for

    nets = ["93.184.216.0/24"]
    with gateway(**FAST, tenants=TENANTS, fetch_allowed_networks=nets) as client:
        submitted = client.post(
            "/api/analyze", json={"url": "http://93.184.216.34/a.mp4"}, headers=auth(B)
        ).json()["jobId"]
        assert client.delete(f"/api/job/{submitted}", headers=auth(B)).status_code == 200
        payload = JobPayload(
            job_id=new_job_id(), source=JobSource(kind="url", url="http://93.184.216.34/a.mp4")
        )
        done = payload.job_id
        JobQueue(redis, None, client.settings).enqueue(  # type: ignore[arg-type]
            payload, func="tests.dispatcher.jobfuncs.slow_job", extra_meta={"tenant": "acme"}
        )
        client.headers.update(auth(ROOT))
        worker_process(client.settings)
        wait_for(client, done, finished, timeout_s=60)
        assert client.get("/api/audit", headers=auth(A)).status_code == 403
        entries = client.get("/api/audit", headers=auth(ROOT)).json()["entries"]
    actions = [(e["action"], e.get("tenant"), e.get("job_id")) for e in entries]
    assert ("submit", "bravo", submitted) in actions
    assert ("cancel", "bravo", submitted) in actions
    verdict = next(e for e in entries if e["action"] == "verdict")
    assert verdict["job_id"] == done and verdict["tenant"] == "acme"
    assert verdict["threshold"] == client.settings.threshold
    assert set(verdict["weights"]) == {"visual", "audio", "lipsync"} and "models" in verdict
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
