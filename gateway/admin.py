"""What the operator console shows, read from Redis with rq's own API.

Queue depth per priority, the workers and the job each is running, recent jobs (from
each queue and rq's registries), and throughput and latency over the last hour from the
finished and failed registries' own timestamps. Also the two operator actions: retry a
failed (or cancelled) job, cancel a waiting one.

Synchronous (rq's API is): the routes run these in FastAPI's thread pool. Every read is
bounded (``scan_limit`` jobs per registry at most), so a large backlog costs a bounded
number of round trips. Reads never run rq's registry cleanup: moving abandoned jobs on
is the workers' maintenance, done with dfd's exception handlers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result as RQResult

from dfd.jobid import is_job_id
from dfd.states import QUEUE_NAMES, JobState
from gateway.cancel import cancel_waiting
from gateway.errors import ConflictError, NotFoundError
from gateway.queue import SERIALIZER, client_state, job_error
from gateway.schemas import (
    AdminJob,
    AdminJobs,
    AdminOverview,
    AdminQueue,
    AdminWorker,
    Throughput,
)

WINDOW_S = 3600
"""Throughput and latency are over the last hour."""

_WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.CREATED}
_FAILED = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
CANCELLED_ERROR = {"type": "cancelled", "message": "job: cancelled by an operator"}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # rq keeps naive UTC datetimes
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max((end - start).total_seconds(), 0.0), 3)


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` of them at or below."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


class Console:
    """The console's reads and actions over one Redis (rq's JSON serializer, dfd's queues)."""

    def __init__(self, redis: Redis, uploads_dir: Path, scan_limit: int = 200) -> None:
        self._redis = redis
        self._uploads_dir = uploads_dir
        self._scan_limit = scan_limit
        self._queues = {
            name: Queue(name, connection=redis, serializer=SERIALIZER) for name in QUEUE_NAMES
        }

    # --- reads ---------------------------------------------------------------------
    def overview(self, now: datetime | None = None) -> AdminOverview:
        now = now or datetime.now(UTC)
        return AdminOverview(
            queues=[self._queue(q) for q in self._queues.values()],
            workers=self._workers(),
            lastHour=self._throughput(now),
        )

    def _queue(self, queue: Queue) -> AdminQueue:
        def count(registry: BaseRegistry) -> int:
            return registry.get_job_count(cleanup=False)

        return AdminQueue(
            name=queue.name,
            waiting=queue.count,
            scheduled=count(ScheduledJobRegistry(queue=queue)),
            active=count(StartedJobRegistry(queue=queue)),
            failed=count(FailedJobRegistry(queue=queue)),
            completed=count(FinishedJobRegistry(queue=queue)),
        )

    def _workers(self) -> list[AdminWorker]:
        workers = []
        for worker in Worker.all(connection=self._redis, serializer=SERIALIZER):
            job_id = worker.get_current_job_id()
            job = self._fetch(job_id) if job_id else None
            meta = job.meta if job is not None else {}
            workers.append(
                AdminWorker(
                    name=worker.name,
                    state=str(worker.get_state()),
                    queues=worker.queue_names(),
                    jobId=job_id,
                    stage=meta.get("stage"),
                    progress=meta.get("progress"),
                    lastHeartbeat=_iso(worker.last_heartbeat),
                    completed=worker.successful_job_count,
                    failed=worker.failed_job_count,
                )
            )
        return sorted(workers, key=lambda w: w.name)

    def _throughput(self, now: datetime) -> Throughput:
        since = now - timedelta(seconds=WINDOW_S)
        per_minute = [0] * (WINDOW_S // 60)
        latencies: list[float] = []
        completed = failed = 0
        for queue in self._queues.values():
            for registry, is_failure in (
                (FinishedJobRegistry(queue=queue), False),
                (FailedJobRegistry(queue=queue), True),
            ):
                for job in self._jobs_of(registry):
                    ended = job.ended_at and job.ended_at.replace(tzinfo=UTC)
                    if ended is None or ended < since or ended > now:
                        continue
                    failed += is_failure
                    completed += not is_failure
                    minute = int((ended - since).total_seconds() // 60)
                    per_minute[min(minute, len(per_minute) - 1)] += 1
                    start = job.created_at or job.enqueued_at  # submission, not the last retry
                    latency = _seconds(start.replace(tzinfo=UTC) if start else None, ended)
                    if not is_failure and latency is not None:
                        latencies.append(latency)
        return Throughput(
            windowS=WINDOW_S,
            completed=completed,
            failed=failed,
            perMinute=per_minute,
            latencyP50S=_percentile(latencies, 0.5),
            latencyP95S=_percentile(latencies, 0.95),
        )

    def jobs(
        self,
        state: JobState | None = None,
        label: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
    ) -> AdminJobs:
        """Recent jobs, newest first, filtered by client state, label and creation time."""
        found: dict[str, Job] = {}
        for queue in self._queues.values():
            sources: list[Iterable[Job]] = [
                self._jobs_of_ids(queue.get_job_ids(0, self._scan_limit))
            ]
            for registry_class in (
                StartedJobRegistry,
                ScheduledJobRegistry,
                DeferredJobRegistry,
                FinishedJobRegistry,
                FailedJobRegistry,
                CanceledJobRegistry,
            ):
                sources.append(self._jobs_of(registry_class(queue=queue)))
            for source in sources:
                for job in source:
                    found.setdefault(job.id, job)
        verdicts = self._verdicts(list(found.values()))
        rows = []
        for job in found.values():
            row = self._row(job, verdicts.get(job.id))
            if state is not None and row.status != state:
                continue
            if label is not None and row.label != label:
                continue
            created = job.created_at.replace(tzinfo=UTC) if job.created_at else None
            if since is not None and (created is None or created < since):
                continue
            rows.append((created or datetime.min.replace(tzinfo=UTC), row))
        rows.sort(key=lambda pair: pair[0], reverse=True)
        return AdminJobs(jobs=[row for _, row in rows[:limit]], total=len(rows))

    def _verdicts(self, jobs: list[Job]) -> dict[str, dict[str, Any]]:
        """The result documents of the finished ones among ``jobs``, in one round trip."""
        finished = [j for j in jobs if j.get_status(refresh=False) == JobStatus.FINISHED]
        if not finished:
            return {}
        with self._redis.pipeline(transaction=False) as pipe:
            for job in finished:
                pipe.xrevrange(RQResult.get_key(job.id), "+", "-", count=1)
            replies = pipe.execute()
        verdicts = {}
        for job, latest in zip(finished, replies, strict=True):
            if not latest:
                continue
            result_id, entry = latest[0]
            rid = result_id.decode() if isinstance(result_id, bytes) else str(result_id)
            value = RQResult.restore(job.id, rid, entry, self._redis, SERIALIZER).return_value
            if isinstance(value, dict):
                verdicts[job.id] = value
        return verdicts

    def _row(self, job: Job, result: dict[str, Any] | None = None) -> AdminJob:
        status = job.get_status(refresh=False)
        meta = job.meta or {}
        row = AdminJob(
            jobId=job.id,
            status=client_state(status, meta),
            rqStatus=str(status.value if status else "unknown"),
            priority=job.origin,
            kind=meta.get("kind"),
            stage=meta.get("stage"),
            progress=meta.get("progress"),
            createdAt=_iso(job.created_at),
            endedAt=_iso(job.ended_at),
            durationS=_seconds(job.started_at, job.ended_at),
        )
        if status == JobStatus.FINISHED:
            if result is None:
                result = self._verdicts([job]).get(job.id)
            if result is not None:
                row.label = result.get("label")
                row.confidence = result.get("confidence")
        elif status in _FAILED:
            row.error = job_error(meta, "")
        return row

    def _fetch(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self._redis, serializer=SERIALIZER)
        except NoSuchJobError:
            return None

    def _jobs_of(self, registry: BaseRegistry) -> list[Job]:
        # Registries are sorted by expiry (or start) time: the last ones are the newest.
        # cleanup=False: expiring abandoned jobs is the workers' maintenance, which runs
        # dfd's exception handlers (retry or record the error); a read must not do it.
        ids = registry.get_job_ids(0, self._scan_limit - 1, desc=True, cleanup=False)
        return self._jobs_of_ids(ids)

    def _jobs_of_ids(self, ids: list[str]) -> list[Job]:
        if not ids:
            return []
        jobs = Job.fetch_many(ids, connection=self._redis, serializer=SERIALIZER)
        return [job for job in jobs if job is not None]

    # --- actions -------------------------------------------------------------------
    def _known(self, job_id: str) -> Job:
        job = self._fetch(job_id) if is_job_id(job_id) else None
        if job is None:
            raise NotFoundError(
                f"job: expected a known job id, got {job_id!r} (unknown or expired)"
            )
        return job

    def retry(self, job_id: str) -> AdminJob:
        """Put a failed or cancelled job back on its queue, as a fresh attempt.

        Raises:
            NotFoundError: unknown or expired id.
            ConflictError: the job has not failed (waiting, active or completed).
        """
        job = self._known(job_id)
        status = job.get_status()
        if status not in _FAILED:
            raise ConflictError(
                f"retry: expected a failed or cancelled job, got one that is "
                f"{client_state(status, job.meta or {}).value} ({status.value if status else 'unknown'})"
            )
        upload = self._upload_of(job)
        if upload is not None and not upload.is_file():
            raise ConflictError(
                f"retry: job {job_id}'s upload was deleted when it failed; upload the file again"
            )
        job.meta.pop("error", None)
        job.meta.pop("stage", None)
        job.meta.pop("progress", None)
        job.save_meta()
        registry: BaseRegistry = (
            CanceledJobRegistry(job.origin, connection=self._redis, serializer=SERIALIZER)
            if status == JobStatus.CANCELED
            else FailedJobRegistry(job.origin, connection=self._redis, serializer=SERIALIZER)
        )
        try:
            registry.requeue(job)
        except InvalidJobOperation as exc:
            raise ConflictError(
                f"retry: job {job_id} is no longer in rq's {registry.key} (retried already?)"
            ) from exc
        return self._row(self._known(job_id))

    def cancel(self, job_id: str) -> AdminJob:
        """Cancel a waiting job: it leaves its queue and ends ``cancelled``, as the
        job view reports it (rq's status ``canceled``).

        Raises:
            NotFoundError: unknown or expired id.
            ConflictError: the job is not waiting (a running job is the worker's to stop).
        """
        job = self._known(job_id)
        status = job.get_status()
        if status not in _WAITING:
            raise ConflictError(
                f"cancel: expected a waiting job, got one that is "
                f"{client_state(status, job.meta or {}).value} ({status.value if status else 'unknown'})"
            )
        cancel_waiting(job, self._uploads_dir, CANCELLED_ERROR["message"])
        return self._row(self._known(job_id))

    def _upload_of(self, job: Job) -> Path | None:
        """The job's uploaded file, if it names one in the gateway's uploads folder."""
        args: list[Any] = list(job.args or [])
        source = args[0].get("source", {}) if args and isinstance(args[0], dict) else {}
        path = source.get("path") if isinstance(source, dict) else None
        if not path:
            return None
        file = Path(path)
        return file if file.resolve().parent == self._uploads_dir.resolve() else None
