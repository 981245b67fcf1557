"""A batch's record and its jobs written to Redis: what the JSON and the multipart
``POST /api/batch`` share."""

from __future__ import annotations

import json
from typing import Any

from dfd.jobid import batch_key
from dfd.schemas import JobOptions, JobPayload, JobSource, timestamp
from dfd.states import Priority
from gateway.deps import GatewayState
from gateway.webhooks import DELIVER_BATCH_FUNC, delivery_queue_name, enqueue_delivery


def submit_batch(
    state: GatewayState,
    batch_id: str,
    jobs: list[tuple[str, JobSource]],
    priority: Priority,
    meta: dict[str, Any],
    callback: str | None,
    options: JobOptions | None = None,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Record the batch and enqueue its jobs (``(job id, source)`` each), then its webhook.

    The record and the jobs are one transaction: Redis failing part-way leaves no job of
    the batch queued, so a refused request's files are nobody's (a job enqueued before
    the failure would have found its upload removed and failed as corrupt media).

    ``extra`` goes into the batch's record as it is (a multipart batch's refused files).
    """
    s = state.settings
    ids = [job_id for job_id, _ in jobs]
    record = {"batchId": batch_id, "tenant": meta.get("tenant"), "jobs": ids, **(extra or {})}
    record["createdAt"] = timestamp()
    if callback is not None:
        record["webhook"] = {"status": "pending", "attempts": 0}
    ttl = max(s.result_ttl_s, s.failure_ttl_s)
    with state.redis.pipeline(transaction=True) as pipe:
        pipe.multi()  # explicit, so rq queues its writes in it rather than starting one
        pipe.set(batch_key(batch_id), json.dumps(record), ex=ttl)
        enqueued = [
            state.queue.enqueue(
                JobPayload(job_id=job_id, source=source, priority=priority, options=options),
                extra_meta={**meta, "batch_id": batch_id},
                pipeline=pipe,
            )
            for job_id, source in jobs
        ]
        pipe.execute()
    if callback is not None:
        enqueue_delivery(
            state.queue.queue(delivery_queue_name()),
            enqueued,
            DELIVER_BATCH_FUNC,
            (batch_id, callback),
            s,
        )
    return ids
