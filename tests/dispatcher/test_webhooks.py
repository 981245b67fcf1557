"""Webhook deliveries through a real worker and Redis to a real loopback receiver.

Jobs are test functions (``tests.dispatcher.jobfuncs``); the delivery is enqueued as the
gateway enqueues it (``gateway.webhooks.enqueue_delivery``), and the body is compared
with what ``GET /api/job/{id}`` answers.
"""

from __future__ import annotations

import json

import pytest

from dfd.jobid import new_job_id
from dfd.schemas import JobPayload, JobSource
from dfd.webhook_signature import verify
from gateway.queue import JobQueue
from gateway.webhooks import DELIVER_FUNC, delivery_queue_name, enqueue_delivery
from tests.dispatcher.test_worker import FAST, finished, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "w" * 32
HOOKS = {
    **FAST,
    "webhook_secret": SECRET,
    "webhook_backoff_s": 0,
    "webhook_retries": 2,
    "fetch_allowed_networks": ["127.0.0.1/32"],  # the receiver is on loopback
    "job_retries": 0,
}


def submit(settings, redis, func: str, callback_url: str) -> str:
    """Enqueue a job and its delivery as ``gateway.routes.accepted.submit`` does."""
    queue = JobQueue(redis, None, settings)  # type: ignore[arg-type]
    payload = JobPayload(
        job_id=new_job_id(), source=JobSource(kind="url", url="http://93.184.216.34/a.mp4")
    )
    job = queue.enqueue(
        payload, func=func, extra_meta={"webhook": {"status": "pending", "attempts": 0}}
    )
    enqueue_delivery(
        queue.queue(delivery_queue_name()), [job], DELIVER_FUNC, (job.id, callback_url), settings
    )
    return job.id


def delivered(view: dict) -> bool:
    return finished(view) and view.get("webhook", {}).get("status") in ("delivered", "failed")


def test_completed_job_is_posted_signed_once(
    gateway, redis, worker_process, webhook_receiver
) -> None:
    with gateway(**HOOKS) as client:
        job_id = submit(
            client.settings, redis, "tests.dispatcher.jobfuncs.slow_job", webhook_receiver.url
        )
        view, _ = wait_for(client, job_id, lambda v: True)
        assert view["webhook"] == {"status": "pending", "attempts": 0}
        worker_process(client.settings)
        view, _ = wait_for(client, job_id, delivered)
    (delivery,) = webhook_receiver.wait(1)
    headers = delivery.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-dfd-signature"].startswith("sha256=")
    assert verify(SECRET, headers["x-dfd-timestamp"], headers["x-dfd-signature"], delivery.body)
    assert not verify(
        "x" * 32, headers["x-dfd-timestamp"], headers["x-dfd-signature"], delivery.body
    )
    assert not verify(
        SECRET, headers["x-dfd-timestamp"], headers["x-dfd-signature"], delivery.body + b" "
    )
    body = json.loads(delivery.body)
    assert body["jobId"] == job_id and body["status"] == "completed"
    assert body["result"] == view["result"]  # the job view, as GET gives it
    assert body["createdAt"] == view["createdAt"]
    assert view["webhook"]["status"] == "delivered" and view["webhook"]["attempts"] == 1
    assert view["webhook"]["statusCode"] == 200


def test_failed_delivery_is_retried_with_backoff_then_recorded(
    gateway, redis, worker_process, webhook_receiver
) -> None:
    webhook_receiver.answers = [503, 500]
    with gateway(**HOOKS) as client:
        job_id = submit(
            client.settings,
            redis,
            "tests.dispatcher.jobfuncs.input_error_job",
            webhook_receiver.url,
        )
        worker_process(client.settings)
        view, _ = wait_for(client, job_id, delivered)
    deliveries = webhook_receiver.wait(3)
    assert len(deliveries) == 3  # two 5xx, then accepted
    assert json.loads(deliveries[-1].body)["status"] == "failed"
    assert json.loads(deliveries[-1].body)["error"]["type"] == view["error"]["type"]
    assert view["webhook"]["status"] == "delivered" and view["webhook"]["attempts"] == 3


def test_receiver_refusing_is_final_and_recorded(
    gateway, redis, worker_process, webhook_receiver
) -> None:
    webhook_receiver.answers = [410]
    with gateway(**HOOKS) as client:
        job_id = submit(
            client.settings, redis, "tests.dispatcher.jobfuncs.slow_job", webhook_receiver.url
        )
        worker_process(client.settings)
        view, _ = wait_for(client, job_id, delivered)
    assert len(webhook_receiver.deliveries) == 1  # a 4xx is not retried
    assert view["webhook"]["status"] == "failed" and view["webhook"]["statusCode"] == 410
    assert "got 410" in view["webhook"]["error"]


def test_private_callback_is_refused_at_delivery(
    gateway, redis, worker_process, webhook_receiver
) -> None:
    """The worker vets the callback URL again: loopback is refused unless exempted."""
    with gateway(**{**HOOKS, "fetch_allowed_networks": []}) as client:
        job_id = submit(
            client.settings, redis, "tests.dispatcher.jobfuncs.slow_job", webhook_receiver.url
        )
        worker_process(client.settings)
        view, _ = wait_for(client, job_id, delivered)
    assert webhook_receiver.deliveries == []
    assert view["webhook"]["status"] == "failed"
    assert "127.0.0.1" in view["webhook"]["error"]
