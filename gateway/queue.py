"""The RQ side of the gateway: enqueue a job by function path, and read a job back.

Jobs go to one of three RQ queues (``high``, ``default``, ``low``) and name their
function by path (``dispatcher.jobs.run_job``), so the gateway never imports the
pipeline. They are serialised as JSON, not pickle: the gateway decodes what workers
wrote to Redis, and JSON cannot execute code.

Reading a job is one Redis round trip (the job hash and its latest result, pipelined),
so the status endpoint stays cheap under heavy polling. A failed job's entry is decoded
with rq's own ``Result.restore``. A finished job's result document is the one place that
does not go through rq: rq would parse the document only for the view to serialise it
again, (``benchmarks/results/job_view.md``, on a loaded 2-core machine: 76 µs spliced vs
724 µs through rq for a 30 s video's result), so its bytes are base64-decoded and spliced
in as the worker wrote them; ``tests/gateway/test_jobs.py`` checks the splice against rq's
own decoding. The evidence links in them are re-signed in the bytes at each read
(``resign``, ``gateway.evidence_links``): 253 µs in all, the HMACs of 9 links.
"""

from __future__ import annotations

import json
from base64 import b64decode
from collections.abc import Callable
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq import Queue
from rq.job import Callback, Job, JobStatus, Retry
from rq.results import Result as RQResult
from rq.serializers import JSONSerializer

from dfd.jobid import is_job_id
from dfd.schemas import JobError, JobPayload
from dfd.settings import Settings
from dfd.states import QUEUE_NAMES, JobState
from dfd.tracing import current_traceparent

JOB_FUNC = "dispatcher.jobs.run_job"
AUDIT_VERDICT_FUNC = "dispatcher.audit.on_verdict"
SERIALIZER = JSONSerializer


_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.CREATED}
_FAILED = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


def client_state(status: JobStatus | None, meta: dict[str, Any]) -> JobState:
    """The state ``GET /api/job/{id}`` reports for an rq status and the job's meta: a job
    that ended with a recorded ``cancelled`` error (the API's cancel, the console's, or a
    worker stopping at a stage boundary) is ``cancelled``, whatever rq calls it."""
    if status == JobStatus.STARTED:
        return JobState.ACTIVE
    if status == JobStatus.FINISHED:
        return JobState.COMPLETED
    if status in _FAILED:
        cancelled = (meta.get("error") or {}).get("type") == "cancelled"
        return JobState.CANCELLED if cancelled else JobState.FAILED
    return JobState.WAITING


def backoff_intervals(settings: Settings) -> list[int]:
    """Retry delays in seconds: ``retry_backoff_s`` doubling per retry (rq takes whole seconds)."""
    return [int(round(settings.retry_backoff_s * 2**i)) for i in range(settings.job_retries)]


def retry_policy(settings: Settings) -> Retry | None:
    if settings.job_retries < 1:
        return None
    return Retry(max=settings.job_retries, interval=backoff_intervals(settings))


class JobQueue:
    """Enqueue (sync rq client) and look up (async, one round trip) jobs."""

    def __init__(self, redis: Redis, aredis: AsyncRedis, settings: Settings) -> None:
        self._redis = redis
        self._aredis = aredis
        self._settings = settings
        self._queues = {
            name: Queue(name, connection=redis, serializer=SERIALIZER) for name in QUEUE_NAMES
        }

    def queue(self, priority: str) -> Queue:
        return self._queues[priority]

    def enqueue(
        self,
        payload: JobPayload,
        func: str = JOB_FUNC,
        extra_meta: dict[str, Any] | None = None,
        pipeline: Any = None,
    ) -> Job:
        """Put ``payload`` on its priority's queue, with retries, timeout and TTLs from settings.

        With ``pipeline`` (a transaction), the job's writes join it and land when the
        caller executes it: several jobs enqueued all together or not at all.
        """
        s = self._settings
        meta: dict[str, Any] = {"retries": s.job_retries, "kind": payload.source.kind}
        meta.update(extra_meta or {})  # tenant, batch, webhook state (gateway.routes.accepted)
        traceparent = current_traceparent()
        if traceparent is not None:  # the worker's job span continues the request's trace
            meta["traceparent"] = traceparent
        return self._queues[payload.priority].enqueue(
            func,
            payload.model_dump(mode="json"),
            job_id=payload.job_id,
            retry=retry_policy(s),
            job_timeout=s.job_timeout_s,
            result_ttl=s.result_ttl_s,
            failure_ttl=s.failure_ttl_s,
            description=f"{payload.source.kind} job {payload.job_id}",
            meta=meta,
            on_success=Callback(AUDIT_VERDICT_FUNC),  # the verdict's audit entry (dfd.audit)
            pipeline=pipeline,
        )

    def add_view(self, pipe: Any, job_id: str) -> bool:
        """Queue the two reads of a job lookup on ``pipe``; ``False`` for an impossible id."""
        if not is_job_id(job_id):
            return False
        pipe.hmget(Job.key_for(job_id), *_FIELDS)
        pipe.xrevrange(RQResult.get_key(job_id), "+", "-", count=1)
        return True


# The job hash fields a lookup reads (rq's Job.to_dict names); not ``data``, which holds
# the payload and is the bulk of the hash.
_FIELDS = ("status", "meta", "created_at", "enqueued_at", "started_at", "ended_at", "retries_left")


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None


def view_json(
    job_id: str,
    fields: list[bytes | None],
    latest: list[Any],
    visible: Callable[[dict[str, Any]], bool] | None = None,
    resign: Callable[[bytes], bytes] | None = None,
) -> bytes | None:
    """The ``JobView`` JSON of a job from its hash fields and latest rq result, or ``None``.

    rq stores timestamps as ISO 8601 UTC strings and (with the JSON serializer) the meta
    and the return value as JSON, so nothing here is re-parsed beyond the small meta: the
    result document is spliced in as the worker wrote it (it was validated there).
    """
    raw_status, raw_meta, created, enqueued, started, ended, retries_left = fields
    if raw_status is None:
        return None  # unknown, or expired with its result TTL
    status = JobStatus(raw_status.decode())
    meta = SERIALIZER.loads(raw_meta) if raw_meta else {}
    if visible is not None and not visible(meta):
        return None  # another tenant's job reads as an unknown one
    attempt = int(meta.get("attempt") or 1)
    doc: dict[str, Any] = {"jobId": job_id}
    result_json: bytes | None = None
    if status in _WAITING:
        # retries_left counts down as retries are scheduled: the next run is this attempt.
        if retries_left is not None:
            attempt = int(meta.get("retries") or 0) - int(retries_left) + 1
        doc["status"] = JobState.WAITING.value
    elif status == JobStatus.STARTED:
        doc["status"] = JobState.ACTIVE.value
        if meta.get("stage") is not None:
            doc["stage"] = meta["stage"]
        if meta.get("progress") is not None:
            doc["progress"] = meta["progress"]
    elif status == JobStatus.FINISHED:
        doc["status"] = JobState.COMPLETED.value
        entry = latest[0][1] if latest else {}
        if entry.get(b"return_value"):
            result_json = b64decode(entry[b"return_value"])
    elif status in _FAILED:
        doc["status"] = client_state(status, meta).value
        exc_string = ""
        if latest:
            result_id, entry = latest[0]
            rid = result_id.decode() if isinstance(result_id, bytes) else str(result_id)
            # The connection is only kept on the Result; decoding needs none.
            restored = RQResult.restore(job_id, rid, entry, None, SERIALIZER)  # type: ignore[arg-type]
            exc_string = restored.exc_string or ""
        doc["error"] = job_error(meta, exc_string).model_dump(mode="json", exclude_none=True)
    else:
        doc["status"] = JobState.WAITING.value
    doc["attempt"] = max(attempt, 1)
    doc["createdAt"] = _text(created)
    # The latest of rq's timestamps and the worker's last progress write (same format).
    stamps = [
        t for t in (_text(ended or started or enqueued or created), meta.get("updated_at")) if t
    ]
    doc["updatedAt"] = max(stamps) if stamps else None
    doc["webhook"] = meta.get("webhook")
    doc["batchId"] = meta.get("batch_id")
    body = json.dumps(
        {k: v for k, v in doc.items() if v is not None}, separators=(",", ":")
    ).encode()
    if result_json is not None:
        if resign is not None:  # evidence links signed now (gateway.evidence_links)
            result_json = resign(result_json)
        body = body[:-1] + b',"result":' + result_json + b"}"
    return body


def job_error(meta: dict[str, Any], exc_string: str) -> JobError:
    """The failure as the worker recorded it, else a generic one (the traceback is not shown)."""
    recorded = meta.get("error")
    if isinstance(recorded, dict) and recorded.get("message"):
        return JobError.model_validate(recorded)
    # No error recorded by dfd's handler: rq's traceback is all there is, and it is the
    # operator's to read (it names files and internal details), not the client's.
    if "AbandonedJobError" in exc_string or "terminated unexpectedly" in exc_string:
        return JobError(type="worker-lost", message="worker died while processing")
    return JobError(
        type="internal",
        message="job: internal error (the worker's log and rq's failed-job registry "
        "have the details)",
    )
