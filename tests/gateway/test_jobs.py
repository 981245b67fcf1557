"""GET /api/job/{id}: rq's job states mapped onto waiting / active / completed / failed."""

from __future__ import annotations

import pytest
from rq.job import Job, JobStatus
from rq.results import Result as RQResult

from dfd.jobid import new_job_id
from dfd.schemas import Evidence, JobPayload, JobSource, JobView, Result
from dfd.states import Label
from gateway.queue import JobQueue

pytestmark = pytest.mark.integration

RESULT = Result(
    confidence=0.9,
    label=Label.MANIPULATED,
    modalities={},
    evidence=Evidence(),
    models={"visual": "meso4_df@1"},
).model_dump(mode="json")


def _enqueue(client, redis) -> Job:
    payload = JobPayload(
        job_id=new_job_id(), source=JobSource(kind="url", url="http://93.184.216.34/a.mp4")
    )
    return JobQueue(redis, None, client.settings).enqueue(payload)  # type: ignore[arg-type]


def _get(client, job_id: str) -> dict:
    response = client.get(f"/api/job/{job_id}")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    JobView.model_validate(response.json())  # the body is a valid JobView
    return response.json()


def test_unknown_malformed_and_expired_ids_are_404(gateway, redis) -> None:
    with gateway() as client:
        for job_id in ("x" * 32, "short", "has space in it ......", "../../etc"):
            response = client.get(f"/api/job/{job_id}")
            assert response.status_code == 404, job_id
            assert response.json()["type"] == "urn:dfd:problem:not-found"
        job = _enqueue(client, redis)
        redis.delete(job.key)  # what the result TTL does
        assert client.get(f"/api/job/{job.id}").status_code == 404


def test_queued_is_waiting_on_attempt_one(gateway, redis) -> None:
    with gateway(job_retries=3) as client:
        job = _enqueue(client, redis)
        view = _get(client, job.id)
    assert view["status"] == "waiting"
    assert view["attempt"] == 1
    assert view["createdAt"].endswith("Z")
    assert "result" not in view and "error" not in view


def test_scheduled_retry_is_waiting_with_its_attempt(gateway, redis) -> None:
    with gateway(job_retries=3) as client:
        job = _enqueue(client, redis)
        job.retries_left = 1  # two retries used
        job.set_status(JobStatus.SCHEDULED)
        job.save()
        assert _get(client, job.id)["attempt"] == 3


def test_started_is_active_with_stage_and_progress(gateway, redis) -> None:
    with gateway() as client:
        job = _enqueue(client, redis)
        job.meta.update({"attempt": 2, "stage": "infer", "progress": 0.4})
        job.save_meta()
        job.set_status(JobStatus.STARTED)
        view = _get(client, job.id)
    assert (view["status"], view["attempt"], view["stage"], view["progress"]) == (
        "active",
        2,
        "infer",
        0.4,
    )


def test_finished_is_completed_with_the_result(gateway, redis) -> None:
    with gateway() as client:
        job = _enqueue(client, redis)
        job.set_status(JobStatus.FINISHED)
        RQResult.create(job, RQResult.Type.SUCCESSFUL, ttl=60, return_value=RESULT)
        view = _get(client, job.id)
    assert view["status"] == "completed"
    assert view["result"] == RESULT
    # The view splices the result's bytes in without rq (benchmarks/results/job_view.md says
    # why): they must be exactly what rq's own decoding of the stored result gives.
    assert view["result"] == RQResult.fetch_latest(job, serializer=job.serializer).return_value


def test_failed_reports_the_recorded_error(gateway, redis) -> None:
    with gateway() as client:
        job = _enqueue(client, redis)
        job.meta["error"] = {
            "type": "unsupported-media",
            "message": "probe: expected a video stream, got none",
            "stage": "probe",
        }
        job.save_meta()
        job.set_status(JobStatus.FAILED)
        view = _get(client, job.id)
    assert view["status"] == "failed"
    assert view["error"] == {
        "type": "unsupported-media",
        "message": "probe: expected a video stream, got none",
        "stage": "probe",
    }


def _failed_without_a_record(gateway, redis, exc_string: str) -> dict:
    """The view of a job rq failed with ``exc_string`` and no error recorded by dfd."""
    with gateway() as client:
        job = _enqueue(client, redis)
        job.set_status(JobStatus.FAILED)
        RQResult.create_failure(job, ttl=60, exc_string=exc_string)
        return _get(client, job.id)


def test_failed_without_a_record_falls_back_to_rq(gateway, redis) -> None:
    view = _failed_without_a_record(
        gateway, redis, "Traceback ...\nrq.exceptions.AbandonedJobError: gone"
    )
    assert view["error"]["type"] == "worker-lost"
    assert view["error"]["message"].startswith("worker died while processing")


def test_an_unrecorded_failure_shows_no_traceback_text(gateway, redis) -> None:
    # rq's traceback names files, hosts and exception texts: the operator's, not the client's.
    view = _failed_without_a_record(
        gateway, redis, 'Traceback ...\nFileNotFoundError: "/srv/dfd/data/tmp/x/frames/0001.png"'
    )
    assert view["error"]["type"] == "internal"
    assert "/srv/dfd" not in view["error"]["message"]
    assert "FileNotFoundError" not in view["error"]["message"]


def test_polls_survive_a_flushed_script_cache(gateway, redis) -> None:
    """After a Redis restart the limiter's script is gone (NOSCRIPT); the poll reloads it."""
    with gateway() as client:
        job = _enqueue(client, redis)
        assert _get(client, job.id)["status"] == "waiting"
        redis.script_flush()
        response = client.get(f"/api/job/{job.id}")
        assert response.status_code == 200
        assert "ratelimit-remaining" in response.headers


def test_gateway_keeps_answering_across_a_redis_restart(make_settings, tmp_path) -> None:
    """Redis restarts under a running gateway (AOF on): the job is still there, and the
    limiter's script (lost with Redis's script cache) is loaded again."""
    from fastapi.testclient import TestClient
    from redis import Redis

    from cli.local_redis import LocalRedis
    from gateway.app import create_app

    server = LocalRedis(tmp_path / "redis-restart").start()
    try:
        settings = make_settings(redis_url=server.url)
        with TestClient(create_app(settings, Redis.from_url(server.url))) as client:
            job_id = client.post("/api/analyze", json={"url": "http://93.184.216.34/a.mp4"}).json()[
                "jobId"
            ]
            assert client.get(f"/api/job/{job_id}").status_code == 200
            server.stop()
            assert client.get(f"/api/job/{job_id}").status_code == 503
            server.start()
            response = client.get(f"/api/job/{job_id}")
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "waiting"
            assert (
                client.post("/api/analyze", json={"url": "http://93.184.216.34/b.mp4"}).status_code
                == 202
            )
    finally:
        server.stop()
