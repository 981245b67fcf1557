"""The RQ side of the gateway: enqueue a job by function path, and read a job back.

Jobs go to one of three RQ queues (``high``, ``default``, ``low``) and name their
function by path (``dispatcher.jobs.run_job``), so the gateway never imports the
pipeline. They are serialised as JSON, not pickle: the gateway decodes what workers
wrote to Redis, and JSON cannot execute code.

Reading a job is one Redis round trip (the job hash and its latest result, pipelined),
decoded with rq's own ``restore`` functions, so the status endpoint stays cheap under
heavy polling.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq import Queue
from rq.job import Job, JobStatus, Retry
from rq.results import Result as RQResult
from rq.serializers import JSONSerializer

from dfd.schemas import JobError, JobPayload, JobView
from dfd.settings import Settings
from dfd.states import JobState

JOB_FUNC = "dispatcher.jobs.run_job"
QUEUE_NAMES = ("high", "default", "low")
SERIALIZER = JSONSerializer

# token_urlsafe(24): 32 characters, 192 random bits; rq accepts [A-Za-z0-9_-].
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.CREATED}
_FAILED = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


def new_job_id() -> str:
    """An unguessable job id: knowing one id tells nothing about another."""
    return secrets.token_urlsafe(24)


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

    def enqueue(self, payload: JobPayload, func: str = JOB_FUNC) -> Job:
        """Put ``payload`` on its priority's queue, with retries, timeout and TTLs from settings."""
        s = self._settings
        return self._queues[payload.priority].enqueue(
            func,
            payload.model_dump(mode="json"),
            job_id=payload.job_id,
            retry=retry_policy(s),
            job_timeout=s.job_timeout_s,
            result_ttl=s.result_ttl_s,
            failure_ttl=s.failure_ttl_s,
            description=f"{payload.source.kind} job {payload.job_id}",
            meta={"retries": s.job_retries, "kind": payload.source.kind},
        )

    async def view(self, job_id: str) -> JobView | None:
        """What ``GET /api/job/{id}`` shows, or ``None`` for an unknown or expired id."""
        if not _JOB_ID.match(job_id):
            return None
        async with self._aredis.pipeline(transaction=False) as pipe:
            pipe.hgetall(Job.key_for(job_id))
            pipe.xrevrange(RQResult.get_key(job_id), "+", "-", count=1)
            raw, latest = await pipe.execute()
        if not raw:
            return None
        job = Job(job_id, connection=self._redis, serializer=SERIALIZER)
        job.restore(raw)
        result = None
        if latest:
            result_id, fields = latest[0]
            result = RQResult.restore(
                job_id, result_id.decode(), fields, connection=self._redis, serializer=SERIALIZER
            )
        return job_view(job, result)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def job_view(job: Job, result: RQResult | None) -> JobView:
    """Map an rq job onto the client-facing states."""
    meta = job.meta or {}
    status = job._status
    max_retries = int(meta.get("retries") or 0)
    attempt = int(meta.get("attempt") or 1)
    common = {
        "jobId": job.id,
        "createdAt": _iso(job.created_at),
        "updatedAt": _iso(job.ended_at or job.started_at or job.enqueued_at or job.created_at),
    }
    if status in _WAITING:
        # retries_left counts down as retries are scheduled: the next run is this attempt.
        if job.retries_left is not None:
            attempt = max_retries - job.retries_left + 1
        return JobView(status=JobState.WAITING, attempt=attempt, **common)
    if status == JobStatus.STARTED:
        return JobView(
            status=JobState.ACTIVE,
            attempt=attempt,
            stage=meta.get("stage"),
            progress=meta.get("progress"),
            **common,
        )
    if status == JobStatus.FINISHED:
        value = result.return_value if result is not None else None
        return JobView(status=JobState.COMPLETED, attempt=attempt, result=value, **common)
    if status in _FAILED:
        return JobView(
            status=JobState.FAILED, attempt=attempt, error=job_error(meta, result), **common
        )
    return JobView(status=JobState.WAITING, attempt=attempt, **common)


def job_error(meta: dict, result: RQResult | None) -> JobError:
    """The failure as the worker recorded it, else the last line of rq's traceback."""
    recorded = meta.get("error")
    if isinstance(recorded, dict) and recorded.get("message"):
        return JobError.model_validate(recorded)
    exc_string = (result.exc_string or "") if result is not None else ""
    lines = [line for line in exc_string.strip().splitlines() if line.strip()]
    message = lines[-1] if lines else "job failed without a message"
    if "AbandonedJobError" in exc_string or "terminated unexpectedly" in exc_string:
        return JobError(type="worker-lost", message=f"worker died while processing ({message})")
    return JobError(type="internal", message=message)
