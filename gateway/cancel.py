"""Cancelling a job (``DELETE /api/job/{id}``), on rq's synchronous client.

A waiting job is taken off its queue at once (rq's ``Job.cancel``), its uploaded file
deleted and its final state recorded as ``cancelled``; jobs depending on it (its webhook
delivery, its batch's count) still run. An active job cannot be stopped safely from
here (its work horse holds temp files and Triton requests): the job's cancel flag
(``dfd.jobid.cancel_key``) is set, and the worker stops at its next stage boundary,
removing its temp folder, and ends ``cancelled``. The flag is set first in both cases,
so a job a worker takes in between stops at its first stage.
"""

from __future__ import annotations

from pathlib import Path

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from dfd.jobid import cancel_key, is_job_id
from dfd.schemas import JobError, timestamp
from dfd.settings import Settings
from dfd.states import JobState
from gateway.errors import ConflictError, NotFoundError
from gateway.queue import SERIALIZER

_FINAL = {
    JobStatus.FINISHED: JobState.COMPLETED,
    JobStatus.FAILED: JobState.FAILED,
    JobStatus.STOPPED: JobState.FAILED,
    JobStatus.CANCELED: JobState.CANCELLED,
}


def fetch_job(redis: Redis, job_id: str) -> Job:
    """The rq job, or ``NotFoundError``."""
    if is_job_id(job_id):
        try:
            return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
        except NoSuchJobError:
            pass
    raise NotFoundError(f"job: expected a known job id, got {job_id!r} (unknown or expired)")


def cancel_job(redis: Redis, job: Job, settings: Settings) -> JobState:
    """Cancel ``job``; returns its state now: ``cancelled``, or ``active`` until it stops.

    Raises:
        ConflictError: the job had already ended.
    """
    status = job.get_status(refresh=True)
    if status in _FINAL:
        state = _FINAL[status]
        if status == JobStatus.FAILED and (job.meta.get("error") or {}).get("type") == "cancelled":
            state = JobState.CANCELLED
        raise ConflictError(f"job: expected a waiting or active job to cancel, got {state.value}")
    # Outlives any wait in a queue and the run after it.
    redis.set(cancel_key(job.id), b"1", ex=settings.failure_ttl_s + settings.job_timeout_s)
    if status == JobStatus.STARTED:
        return JobState.ACTIVE
    cancel_waiting(job, settings.uploads_dir, "job: cancelled by the client while it waited")
    return JobState.CANCELLED


def cancel_waiting(job: Job, uploads_dir: Path, message: str) -> None:
    """End a waiting job as cancelled: its error recorded, off its queue (its dependents,
    such as a webhook delivery, still run), its upload deleted. The API's cancel and the
    operator console's both end a waiting job this way.

    Raises:
        ConflictError: a concurrent request cancelled it first.
    """
    job.meta["error"] = JobError(type="cancelled", message=message).model_dump(
        mode="json", exclude_none=True
    )
    job.meta["updated_at"] = timestamp()
    job.save_meta()
    try:
        job.cancel(enqueue_dependents=True)
    except InvalidJobOperation as exc:  # cancelled by a concurrent request
        raise ConflictError(
            "job: expected a waiting or active job to cancel, got cancelled"
        ) from exc
    delete_upload(job, uploads_dir)


def delete_upload(job: Job, uploads_dir: Path) -> None:
    """Delete a cancelled job's uploaded file, if it is one of ours (inside ``uploads_dir``)."""
    try:
        payload = job.args[0] if job.args else {}
    except Exception:  # an undecodable job has no file to clean up
        return
    source = payload.get("source") or {} if isinstance(payload, dict) else {}
    if source.get("kind") != "upload" or not source.get("path"):
        return
    path = Path(source["path"]).resolve()
    if uploads_dir.resolve() in path.parents:
        path.unlink(missing_ok=True)
