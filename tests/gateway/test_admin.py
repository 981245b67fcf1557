"""/api/admin: the console's data (queues, workers, last hour, recent jobs) and its actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from rq.job import Job, JobStatus

from gateway.queue import SERIALIZER
from tests.gateway import jobstore

pytestmark = pytest.mark.integration

ADMIN = "a" * 24
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_off_without_admin_keys_and_refuses_wrong_keys(gateway) -> None:
    with gateway() as client:
        off = client.get("/api/admin/overview", headers=AUTH)
        assert off.status_code == 403
        assert "DFD_ADMIN_KEYS" in off.json()["detail"]
    with gateway(admin_keys=[ADMIN]) as client:
        assert client.get("/api/admin/overview").status_code == 401
        wrong = client.get("/api/admin/jobs", headers={"Authorization": "Bearer " + "b" * 24})
        assert wrong.status_code == 401
        assert wrong.json()["type"] == "urn:dfd:problem:unauthorized"


def test_an_api_key_is_not_an_admin_key(gateway) -> None:
    with gateway(admin_keys=[ADMIN], api_keys=["c" * 24]) as client:
        response = client.get(
            "/api/admin/overview", headers={"Authorization": "Bearer " + "c" * 24}
        )
        assert response.status_code == 401


def test_overview_counts_queues_and_the_last_hour(gateway, redis) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        s = client.settings
        jobstore.enqueue(redis, s, "high")
        jobstore.enqueue(redis, s, "high")
        jobstore.enqueue(redis, s, "low")
        for took in (1.0, 3.0, 5.0):
            job = jobstore.enqueue(redis, s)
            jobstore.finish(job, {"label": "authentic", "confidence": 0.1}, took_s=took)
        jobstore.fail(jobstore.enqueue(redis, s))
        body = client.get("/api/admin/overview", headers=AUTH).json()
    queues = {q["name"]: q for q in body["queues"]}
    assert [q["name"] for q in body["queues"]] == ["high", "default", "low"]
    assert (queues["high"]["waiting"], queues["low"]["waiting"], queues["default"]["waiting"]) == (
        2,
        1,
        0,
    )
    assert (queues["default"]["completed"], queues["default"]["failed"]) == (3, 1)
    hour = body["lastHour"]
    assert (hour["completed"], hour["failed"], sum(hour["perMinute"])) == (3, 1, 4)
    assert len(hour["perMinute"]) == 60 and hour["perMinute"][-1] == 4
    # enqueue-to-end: took + 1 s in the queue
    assert hour["latencyP50S"] == pytest.approx(4.0, abs=0.05)
    assert hour["latencyP95S"] == pytest.approx(6.0, abs=0.05)
    assert body["workers"] == []


def test_a_worker_and_the_job_it_runs(gateway, redis) -> None:
    from rq import Worker

    with gateway(admin_keys=[ADMIN]) as client:
        job = jobstore.enqueue(redis, client.settings)
        jobstore.start(job, "faces", 0.5)
        worker = Worker(["high", "default", "low"], connection=redis, name="w-test")
        worker.register_birth()
        worker.set_state("busy")
        worker.set_current_job_id(job.id)
        try:
            body = client.get("/api/admin/overview", headers=AUTH).json()
        finally:
            worker.register_death()
    (seen,) = body["workers"]
    assert (seen["name"], seen["state"], seen["jobId"], seen["stage"], seen["progress"]) == (
        "w-test",
        "busy",
        job.id,
        "faces",
        0.5,
    )
    assert seen["queues"] == ["high", "default", "low"]


def test_jobs_newest_first_and_filtered(gateway, redis) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        s = client.settings
        waiting = jobstore.enqueue(redis, s, "low")
        done = jobstore.enqueue(redis, s)
        jobstore.finish(done, {"label": "manipulated", "confidence": 0.9})
        failed = jobstore.enqueue(redis, s)
        jobstore.fail(failed)
        every = client.get("/api/admin/jobs", headers=AUTH).json()
        by_status = {
            st: [
                j["jobId"]
                for j in client.get(f"/api/admin/jobs?status={st}", headers=AUTH).json()["jobs"]
            ]
            for st in ("waiting", "completed", "failed", "active")
        }
        fakes = client.get("/api/admin/jobs?label=manipulated", headers=AUTH).json()["jobs"]
        authentic = client.get("/api/admin/jobs?label=authentic", headers=AUTH).json()["jobs"]
        recent = client.get("/api/admin/jobs?since_s=600", headers=AUTH).json()["total"]
        bad = client.get("/api/admin/jobs?status=lost", headers=AUTH)
    assert every["total"] == 3
    assert by_status == {
        "waiting": [waiting.id],
        "completed": [done.id],
        "failed": [failed.id],
        "active": [],
    }
    assert [(j["jobId"], j["label"], j["confidence"]) for j in fakes] == [
        (done.id, "manipulated", 0.9)
    ]
    assert authentic == []
    assert recent == 3
    assert bad.status_code == 400
    row = next(j for j in every["jobs"] if j["jobId"] == failed.id)
    assert row["error"] == {
        "type": "fetch-failed",
        "message": "fetch: expected 200, got 404",
        "stage": "fetch",
    }
    assert (row["priority"], row["kind"]) == ("default", "url")


def test_retry_puts_a_failed_job_back_on_its_queue(gateway, redis) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        job = jobstore.enqueue(redis, client.settings, "high")
        jobstore.fail(job)
        assert client.get(f"/api/job/{job.id}").json()["status"] == "failed"
        response = client.post(f"/api/admin/job/{job.id}/retry", headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "waiting"
        view = client.get(f"/api/job/{job.id}").json()
        again = client.post(f"/api/admin/job/{job.id}/retry", headers=AUTH)
    assert view["status"] == "waiting" and "error" not in view
    assert jobstore.queue_of(job).get_job_ids() == [job.id]
    assert Job.fetch(job.id, connection=redis, serializer=SERIALIZER).meta.get("error") is None
    assert again.status_code == 409
    assert "expected a failed or cancelled job, got one that is waiting" in again.json()["detail"]


def test_cancel_takes_a_waiting_job_off_its_queue(gateway, redis) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        job = jobstore.enqueue(redis, client.settings)
        response = client.post(f"/api/admin/job/{job.id}/cancel", headers=AUTH)
        view = client.get(f"/api/job/{job.id}").json()
        again = client.post(f"/api/admin/job/{job.id}/cancel", headers=AUTH)
        unknown = client.post("/api/admin/job/" + "x" * 22 + "/cancel", headers=AUTH)
        cancelled_list = client.get("/api/admin/jobs?status=cancelled", headers=AUTH).json()["jobs"]
        failed_list = client.get("/api/admin/jobs?status=failed", headers=AUTH).json()["jobs"]
        retried = client.post(f"/api/admin/job/{job.id}/retry", headers=AUTH)
    assert response.status_code == 200, response.text
    # The console and the job view agree: the console's cancel answers what the API reports.
    assert (response.json()["status"], response.json()["rqStatus"]) == ("cancelled", "canceled")
    assert view["status"] == "cancelled"
    assert view["error"] == {"type": "cancelled", "message": "job: cancelled by an operator"}
    assert again.status_code == 409
    assert unknown.status_code == 404
    assert [j["jobId"] for j in cancelled_list] == [job.id]
    assert [(j["status"], j["error"]["type"]) for j in cancelled_list] == [
        ("cancelled", "cancelled")
    ]
    assert failed_list == []
    assert retried.status_code == 200 and retried.json()["status"] == "waiting"
    assert jobstore.queue_of(job).get_job_ids() == [job.id]


def test_cancel_refuses_an_active_job(gateway, redis) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        job = jobstore.enqueue(redis, client.settings)
        jobstore.start(job, "infer", 0.3)
        response = client.post(f"/api/admin/job/{job.id}/cancel", headers=AUTH)
    assert response.status_code == 409
    assert (
        response.json()["detail"]
        == "cancel: expected a waiting job, got one that is active (started)"
    )
    assert (
        Job.fetch(job.id, connection=redis, serializer=SERIALIZER).get_status() == JobStatus.STARTED
    )


def test_cancel_deletes_the_jobs_upload(gateway, redis, small_videos) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        data = small_videos["mp4"].read_bytes()
        accepted = client.post("/api/upload", files={"file": ("clip.mp4", data, "video/mp4")})
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["jobId"]
        uploads = list(Path(client.settings.uploads_dir).iterdir())
        assert len(uploads) == 1
        assert client.post(f"/api/admin/job/{job_id}/cancel", headers=AUTH).status_code == 200
        assert list(Path(client.settings.uploads_dir).iterdir()) == []


def test_retry_refuses_an_upload_whose_file_is_gone(gateway, redis, small_videos) -> None:
    with gateway(admin_keys=[ADMIN]) as client:
        data = small_videos["mp4"].read_bytes()
        job_id = client.post("/api/upload", files={"file": ("clip.mp4", data, "video/mp4")}).json()[
            "jobId"
        ]
        job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
        jobstore.fail(job)
        for upload in Path(client.settings.uploads_dir).iterdir():
            upload.unlink()  # what the worker does when a job fails for good
        response = client.post(f"/api/admin/job/{job_id}/retry", headers=AUTH)
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"retry: job {job_id}'s upload was deleted when it failed; upload the file again"
    )
    assert Job.fetch(job_id, connection=redis, serializer=SERIALIZER).get_status() == "failed"
