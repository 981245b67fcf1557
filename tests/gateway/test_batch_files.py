"""``POST /api/batch`` with several ``file`` parts, with a real Redis (and, in the slow
test, a real worker): one job per file, a file refused on its own listed with its
problem while the others go on, a request refused as a whole leaving no file behind,
and the limits and quotas of single uploads counted per file."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.dispatcher.test_worker import FAST

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


def _uploads(client) -> list[Path]:
    folder = client.settings.uploads_dir
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _queued(redis) -> int:
    return sum(redis.llen(f"rq:queue:{q}") for q in ("high", "default", "low"))


def _files(*parts: tuple[str, bytes]) -> list[tuple[str, tuple[str, io.BytesIO]]]:
    return [("file", (name, io.BytesIO(data))) for name, data in parts]


def test_each_file_is_a_job_and_a_refused_file_loses_nothing(gateway, redis, small_videos):
    mp4, webm = small_videos["mp4"].read_bytes(), small_videos["webm"].read_bytes()
    cap = max(len(mp4), len(webm))
    with gateway(max_upload_bytes=cap) as client:
        response = client.post(
            "/api/batch?priority=low",
            files=_files(
                ("a.mp4", mp4),
                ("b.png", PNG),
                ("c.webm", webm),
                ("d.mp4", b""),
                ("e.mp4", mp4 + b"\x00" * (cap - len(mp4) + 1)),
            ),
            data={"options": json.dumps({"threshold": 0.6})},
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert [(j["index"], j["filename"], j["status"]) for j in body["jobs"]] == [
            (0, "a.mp4", "waiting"),
            (2, "c.webm", "waiting"),
        ]
        refused = {r["index"]: r for r in body["refused"]}
        assert sorted(refused) == [1, 3, 4]
        assert refused[1]["status"] == 415 and refused[1]["filename"] == "b.png"
        assert refused[1]["type"] == "urn:dfd:problem:unsupported-media"
        assert "expected a video" in refused[1]["detail"]
        assert refused[3]["status"] == 400 and "non-empty" in refused[3]["detail"]
        assert refused[4]["status"] == 413 and str(cap) in refused[4]["detail"]
        assert response.headers["location"] == f"/api/batch/{body['batchId']}"
        # Exactly the accepted files are kept, each its job's input, byte for byte.
        kept = _uploads(client)
        assert len(kept) == 2 and not any(p.suffix == ".part" for p in kept)
        for job_ref, data, name in zip(body["jobs"], (mp4, webm), ("a.mp4", "c.webm"), strict=True):
            job = Job.fetch(job_ref["jobId"], connection=redis, serializer=JSONSerializer)
            payload = job.args[0]
            assert payload["source"]["kind"] == "upload"
            assert payload["source"]["filename"] == name
            assert Path(payload["source"]["path"]).read_bytes() == data
            assert payload["priority"] == "low" and job.origin == "low"
            assert payload["options"]["threshold"] == 0.6
            assert job.meta["batch_id"] == body["batchId"]
        view = client.get(f"/api/batch/{body['batchId']}").json()
        assert view["counts"] == {"waiting": 2}
        assert [r["index"] for r in view["refused"]] == [1, 3, 4]
    assert _queued(redis) == 2


def test_every_file_refused_refuses_the_request_and_keeps_nothing(gateway, redis) -> None:
    with gateway() as client:
        response = client.post("/api/batch", files=_files(("a.png", PNG), ("b.txt", b"hello")))
        assert response.status_code == 415, response.text
        detail = response.json()["detail"]
        assert "files[0]" in detail and "files[1]" in detail
        assert _uploads(client) == []
    assert _queued(redis) == 0


def test_request_wide_refusals_keep_no_file(gateway, redis, small_videos) -> None:
    mp4 = small_videos["mp4"].read_bytes()
    with gateway(max_batch_items=2, max_batch_upload_bytes=len(mp4) * 3) as client:
        too_many = client.post("/api/batch", files=_files(*[(f"{i}.mp4", mp4) for i in range(3)]))
        assert too_many.status_code == 400
        assert too_many.json()["detail"] == "batch: expected at most 2 files, got more"
        assert _uploads(client) == []
        big = mp4 + b"\x00" * (2 << 20)  # with the framing allowance, over 3 clips in all
        too_big = client.post("/api/batch", files=_files(("a.mp4", big), ("b.mp4", big)))
        assert too_big.status_code == 413, too_big.text
        assert "in all" in too_big.json()["detail"]
        assert _uploads(client) == []
        bad_options = client.post(
            "/api/batch", files=_files(("a.mp4", mp4)), data={"options": "{not json"}
        )
        assert bad_options.status_code == 400 and "options" in bad_options.json()["detail"]
        no_file = client.post("/api/batch", files=[("other", ("a.mp4", io.BytesIO(mp4)))])
        assert no_file.status_code == 400
        assert "at least one multipart field named 'file'" in no_file.json()["detail"]
        callback = client.post(
            "/api/batch",
            files=_files(("a.mp4", mp4)),
            data={"callback_url": "http://127.0.0.1/hook"},
        )
        assert callback.status_code == 400  # no DFD_WEBHOOK_SECRET to sign with
        assert _uploads(client) == []
    assert _queued(redis) == 0


def test_upload_limits_count_each_file(gateway, redis, small_videos) -> None:
    mp4 = small_videos["mp4"].read_bytes()
    with gateway(rate_limit_uploads_per_hour=3) as client:
        first = client.post("/api/batch", files=_files(("a.mp4", mp4), ("b.mp4", mp4)))
        assert first.status_code == 202, first.text
        assert first.headers["ratelimit-remaining"] == "1"
        # One left: the body is read, but its second file is one too many.
        second = client.post("/api/batch", files=_files(("c.mp4", mp4), ("d.mp4", mp4)))
        assert second.status_code == 429, second.text
        assert len(_uploads(client)) == 2  # only the first batch's files
        assert client.post("/api/upload", files={"file": ("e.mp4", mp4)}).status_code == 429
    assert _queued(redis) == 2


def test_a_tenant_quota_counts_each_file(gateway, redis, small_videos) -> None:
    """As a single upload, a batch spends the unit counted before its body even when it is
    refused afterwards; its other files are counted only when accepted."""
    mp4 = small_videos["mp4"].read_bytes()
    key = "t" * 24
    tenants = {"acme": {"keys": [key], "uploads_per_hour": 2}}
    with gateway(tenants=tenants) as client:
        auth = {"Authorization": f"Bearer {key}"}
        three = _files(("a.mp4", mp4), ("b.mp4", mp4), ("c.mp4", mp4))
        refused = client.post("/api/batch", files=three, headers=auth)
        assert refused.status_code == 429 and "tenant 'acme'" in refused.json()["detail"]
        assert _uploads(client) == []
        ok = client.post("/api/batch", files=_files(("a.mp4", mp4)), headers=auth)
        assert ok.status_code == 202, ok.text
        again = client.post("/api/batch", files=_files(("b.mp4", mp4)), headers=auth)
        assert again.status_code == 429
        assert client.post("/api/batch", files=_files(("a.mp4", mp4))).status_code == 401
        assert len(_uploads(client)) == 1
        view = client.get(f"/api/batch/{ok.json()['batchId']}", headers=auth)
        assert view.status_code == 200 and view.json()["counts"] == {"waiting": 1}
    assert _queued(redis) == 1


def test_a_json_batch_gives_its_priority_in_the_body(gateway, redis) -> None:
    with gateway() as client:
        response = client.post(
            "/api/batch?priority=high", json={"items": [{"url": "http://93.184.216.34/a.mp4"}]}
        )
        assert response.status_code == 400
        assert "in the body" in response.json()["detail"]


def test_the_schema_declares_both_bodies(gateway) -> None:
    with gateway() as client:
        operation = client.get("/openapi.json").json()["paths"]["/api/batch"]["post"]
    content = operation["requestBody"]["content"]
    assert content["application/json"]["schema"]["required"] == ["items"]
    files = content["multipart/form-data"]["schema"]["properties"]["file"]
    assert files["type"] == "array" and files["items"]["format"] == "binary"
    assert {"413", "415", "429"} <= set(operation["responses"])


@pytest.mark.slow
def test_a_file_batch_runs_to_its_end_and_leaves_no_file(
    gateway, redis, worker_process, small_videos
) -> None:
    """Through a real worker (no Triton: each job fails as the service's fault): every
    job ends, the batch is done, and the uploads are gone once the outcomes are kept."""
    mp4 = small_videos["mp4"].read_bytes()
    with gateway(**FAST, job_retries=0) as client:
        response = client.post(
            "/api/batch", files=_files(("a.mp4", mp4), ("b.png", PNG), ("c.mp4", mp4))
        )
        assert response.status_code == 202, response.text
        batch_id = response.json()["batchId"]
        worker_process(client.settings)
        deadline = time.monotonic() + 60
        while not (view := client.get(f"/api/batch/{batch_id}").json())["done"]:
            assert time.monotonic() < deadline, view
            time.sleep(0.2)
        assert sum(view["counts"].values()) == 2
        assert [r["filename"] for r in view["refused"]] == ["b.png"]
        for job in view["jobs"]:
            assert job["status"] in ("completed", "failed")
            if job["status"] == "failed":  # never blamed on the (valid) media
                assert job["error"]["type"] not in ("corrupt-media", "unsupported-media")
        deadline = time.monotonic() + 20
        while _uploads(client):
            assert time.monotonic() < deadline, _uploads(client)
            time.sleep(0.2)


def test_redis_failing_part_way_through_the_enqueue_leaves_no_job(
    gateway, redis, small_videos, monkeypatch
) -> None:
    """The batch's jobs go to Redis in one transaction: a failure after some of them were
    enqueued must not leave those queued with their uploads removed (they would fail as
    corrupt media, the user's fault)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    mp4 = small_videos["mp4"].read_bytes()
    with gateway() as client:
        queue = client.app.state.gateway.queue
        real = queue.enqueue
        calls = []

        def failing_third(payload, *args, **kwargs):
            calls.append(payload.job_id)
            if len(calls) == 3:
                raise RedisConnectionError("connection lost mid-batch")
            return real(payload, *args, **kwargs)

        monkeypatch.setattr(queue, "enqueue", failing_third)
        response = client.post("/api/batch", files=_files(*[(f"{i}.mp4", mp4) for i in range(4)]))
        assert response.status_code == 503, response.text
        assert len(calls) == 3
        assert _uploads(client) == []
        assert _queued(redis) == 0
        assert all(redis.exists(f"rq:job:{job_id}") == 0 for job_id in calls)
