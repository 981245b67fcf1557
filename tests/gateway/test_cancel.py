"""``DELETE /api/job/{id}`` through the gateway, with a real Redis and a real worker."""

from __future__ import annotations

import pytest

from dfd.jobid import new_job_id
from dfd.schemas import JobPayload, JobSource
from gateway.queue import JobQueue
from gateway.webhooks import DELIVER_FUNC, delivery_queue_name, enqueue_delivery
from tests.dispatcher.test_worker import FAST, enqueue, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ended(view: dict) -> bool:
    return view["status"] in ("completed", "failed", "cancelled")


def test_waiting_job_is_cancelled_at_once_and_its_upload_removed(gateway, redis, tmp_path) -> None:
    upload = tmp_path / "data" / "uploads" / "clip.mp4"
    with gateway(**FAST) as client:
        upload.parent.mkdir(parents=True, exist_ok=True)
        upload.write_bytes(b"video")
        job_id = enqueue(client.settings, redis, "tests.dispatcher.jobfuncs.slow_job", upload)
        response = client.delete(f"/api/job/{job_id}")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        view = client.get(f"/api/job/{job_id}").json()
        assert view["status"] == "cancelled" and view["error"]["type"] == "cancelled"
        assert not upload.exists(), "the upload outlived its cancelled job"
        assert redis.llen("rq:queue:default") == 0, "the job is still queued"
        again = client.delete(f"/api/job/{job_id}")
        assert again.status_code == 409
        assert again.json()["detail"] == (
            "job: expected a waiting or active job to cancel, got cancelled"
        )


def test_active_job_stops_at_its_next_stage_boundary(gateway, redis, worker_process) -> None:
    with gateway(**{**FAST, "job_retries": 2}) as client:
        job_id = enqueue(client.settings, redis, "tests.dispatcher.jobfuncs.slow_job")
        worker_process(client.settings)
        wait_for(client, job_id, lambda v: v["status"] == "active" and v.get("stage") == "decode")
        response = client.delete(f"/api/job/{job_id}")
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "active"
        view, seen = wait_for(client, job_id, ended)
    assert view["status"] == "cancelled", view
    assert view["error"] == {
        "type": "cancelled",
        "message": f"job: {job_id} was cancelled by the client",
        "stage": "decode",  # the last stage it ran: it stopped before the next
    }
    assert view["attempt"] == 1  # not retried
    assert "result" not in view


def test_finished_and_unknown_jobs_cannot_be_cancelled(gateway, redis, worker_process) -> None:
    with gateway(**FAST) as client:
        job_id = enqueue(client.settings, redis, "tests.dispatcher.jobfuncs.input_error_job")
        worker_process(client.settings)
        wait_for(client, job_id, ended)
        assert client.delete(f"/api/job/{job_id}").status_code == 409
        assert client.delete(f"/api/job/{new_job_id()}").status_code == 404


def test_cancelled_waiting_job_still_gets_its_webhook(
    gateway, redis, worker_process, webhook_receiver
) -> None:
    settings = {
        **FAST,
        "webhook_secret": "w" * 32,
        "fetch_allowed_networks": ["127.0.0.1/32"],
    }
    with gateway(**settings) as client:
        queue = JobQueue(redis, None, client.settings)  # type: ignore[arg-type]
        payload = JobPayload(
            job_id=new_job_id(), source=JobSource(kind="url", url="http://93.184.216.34/a.mp4")
        )
        job = queue.enqueue(payload, func="tests.dispatcher.jobfuncs.slow_job")
        enqueue_delivery(
            queue.queue(delivery_queue_name()),
            [job],
            DELIVER_FUNC,
            (job.id, webhook_receiver.url),
            client.settings,
        )
        assert client.delete(f"/api/job/{job.id}").status_code == 200
        worker_process(client.settings)
        (delivery,) = webhook_receiver.wait(1)
    assert b'"status":"cancelled"' in delivery.body
