"""/api/known-fakes: admin-only, adds a finished job's hashes to the bank, lists, removes."""

from __future__ import annotations

import pytest

from dfd.known_fakes import BANK_KEY, KnownFake, MediaHashes, job_hashes_key

pytestmark = pytest.mark.integration

ADMIN = "a" * 24
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
HASHES = MediaHashes.model_validate(
    {"frames": [{"time_s": 0.0, "pdq": "ab" * 32, "quality": 90, "pdq_center": "cd" * 32}]}
)


def _finished_job(redis, job_id: str = "job1", hashes: MediaHashes = HASHES) -> str:
    redis.set(job_hashes_key(job_id), hashes.model_dump_json())
    return job_id


def test_no_admin_keys_configured_refuses_everyone(gateway, redis) -> None:
    with gateway() as client:
        r = client.get("/api/known-fakes", headers=ADMIN_HEADERS)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "DFD_ADMIN_KEYS" in r.json()["detail"]


def test_a_missing_or_wrong_key_is_401(gateway, redis) -> None:
    with gateway(admin_keys=[ADMIN], api_keys=["u" * 24]) as client:
        assert client.get("/api/known-fakes").status_code == 401
        user = {"Authorization": f"Bearer {'u' * 24}"}  # an API key is not an admin key
        r = client.post("/api/known-fakes", json={"jobId": "job1", "label": "x"}, headers=user)
        assert r.status_code == 401
    assert redis.hlen(BANK_KEY) == 0


def test_add_list_and_delete(gateway, redis) -> None:
    job_id = _finished_job(redis)
    with gateway(admin_keys=[ADMIN]) as client:
        body = {"jobId": job_id, "label": "cloned CEO voice", "note": "ticket 42"}
        r = client.post("/api/known-fakes", json=body, headers=ADMIN_HEADERS)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["label"] == "cloned CEO voice" and made["frames"] == 1
        assert r.headers["location"] == f"/api/known-fakes/{made['id']}"
        stored = KnownFake.model_validate_json(redis.hget(BANK_KEY, made["id"]))
        assert stored.hashes == HASHES and stored.job_id == job_id and stored.note == "ticket 42"

        listed = client.get("/api/known-fakes", headers=ADMIN_HEADERS).json()
        assert [e["id"] for e in listed] == [made["id"]]
        assert "hashes" not in listed[0]

        r = client.delete(f"/api/known-fakes/{made['id']}", headers=ADMIN_HEADERS)
        assert r.status_code == 204
        assert client.get("/api/known-fakes", headers=ADMIN_HEADERS).json() == []
        r = client.delete(f"/api/known-fakes/{made['id']}", headers=ADMIN_HEADERS)
        assert r.status_code == 404
        assert client.delete("/api/known-fakes/..%2f", headers=ADMIN_HEADERS).status_code == 404


def test_a_job_without_hashes_is_404_and_adds_nothing(gateway, redis) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        r = client.post(
            "/api/known-fakes", json={"jobId": "nojob", "label": "x"}, headers=ADMIN_HEADERS
        )
    assert r.status_code == 404
    assert "nojob" in r.json()["detail"]
    assert redis.hlen(BANK_KEY) == 0


def test_a_job_whose_frames_were_all_flat_is_refused(gateway, redis) -> None:
    job_id = _finished_job(redis, "blank", MediaHashes())
    with gateway(admin_keys=[ADMIN]) as client:
        r = client.post(
            "/api/known-fakes", json={"jobId": job_id, "label": "x"}, headers=ADMIN_HEADERS
        )
    assert r.status_code == 400 and "no" in r.json()["detail"]
    assert redis.hlen(BANK_KEY) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"label": "x"},
        {"jobId": "job1"},
        {"jobId": "job1", "label": ""},
        {"jobId": "../x", "label": "x"},
        {"jobId": "job1", "label": "x", "extra": 1},
    ],
)
def test_malformed_bodies_are_refused(gateway, redis, body) -> None:
    _finished_job(redis)
    with gateway(admin_keys=[ADMIN]) as client:
        r = client.post("/api/known-fakes", json=body, headers=ADMIN_HEADERS)
    assert r.status_code in (400, 422), r.text
    assert redis.hlen(BANK_KEY) == 0
