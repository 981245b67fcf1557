"""The RQ entry point of a dfd job, and how its failures are classified.

``run_job(payload)`` is what the gateway enqueues (by the path
``dispatcher.jobs.run_job``). It validates the payload, reports the attempt, stage and
progress in ``job.meta`` (the status endpoint reads them from there), runs the pipeline
and returns the result document as JSON-ready data.

Which failures are retried is decided here, not by rq: rq's ``Retry`` retries on every
exception, so the worker installs :func:`handle_job_exception`, which runs before rq
decides and sets the job's remaining retries to zero for anything that retrying cannot
fix (an :class:`~dfd.errors.InputError`, a bug, a timeout). Only transient errors and a
lost worker are retried. The handler also records the error (type, message, stage) in
``job.meta`` and deletes the uploaded file once the job will not run again.

Workers hold no state between jobs beyond the clients in :class:`WorkerContext`, built
lazily once per process: rq forks a work horse per job, and a gRPC channel must not be
shared across a fork, so the clients are made in the process that uses them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from dfd import errors
from dfd.schemas import JobError, JobPayload, timestamp
from dfd.settings import Settings
from dfd.states import Stage
from dfd.tracing import job_span
from dispatcher.progress import Progress

log = logging.getLogger(__name__)


class InvalidPayloadError(errors.InputError):
    type = "invalid-payload"


@dataclass(frozen=True)
class WorkerContext:
    """What a job needs beyond its payload: settings and long-lived clients."""

    settings: Settings
    triton: Any
    store: Any


_settings: Settings | None = None
_context: WorkerContext | None = None
_context_pid: int | None = None


def configure(settings: Settings) -> None:
    """Set the settings jobs in this process (and its work horses) use; called by ``dfd worker``."""
    global _settings, _context
    _settings = settings
    _context = None


def settings() -> Settings:
    """The worker's settings; built from the environment under a plain ``rq worker``."""
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def worker_context() -> WorkerContext:
    """The process's clients, made on first use in this process."""
    global _context, _context_pid
    if _context is None or _context_pid != os.getpid():
        s = settings()
        if not s.triton_url:
            raise errors.ConfigurationError(
                "worker: expected DFD_TRITON_URL (Triton's gRPC host:port), got none; `dfd serve` sets it"
            )
        from dispatcher.store import open_store
        from dispatcher.triton_client import TritonClient

        _context = WorkerContext(
            settings=s,
            triton=TritonClient(
                s.triton_url, timeout_s=s.triton_timeout_s, retries=s.triton_retries
            ),
            store=open_store(s),
        )
        _context_pid = os.getpid()
    return _context


def attempt_of(job: Job) -> int:
    """Which run of the job this is: 1, then 2... as rq's remaining retries count down."""
    retries = int(job.meta.get("retries") or 0)
    if job.retries_left is None:
        return 1
    return max(retries - job.retries_left + 1, 1)


def parse_payload(payload: dict[str, Any]) -> JobPayload:
    try:
        return JobPayload.model_validate(payload)
    except ValidationError as exc:
        raise InvalidPayloadError(
            f"job payload: expected a JobPayload, got {exc.error_count()} errors: {exc}"
        ) from exc


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Analyse one video; the function the gateway enqueues.

    Returns:
        ``dfd.schemas.Result`` as JSON-ready data.
    """
    job = get_current_job()
    request = parse_payload(payload)
    attempt = 1
    if job is not None:
        attempt = attempt_of(job)
        job.meta.update({"attempt": attempt, "progress": 0.0, "updated_at": timestamp()})
        job.meta.pop("error", None)
        job.meta.pop("stage", None)
        job.save_meta()
    context = worker_context()
    from dispatcher.pipeline import analyze

    traceparent = job.meta.get("traceparent") if job is not None else None
    with job_span(request.job_id, request.source.kind, attempt, traceparent):
        result = analyze(
            request.source,
            request.options.applied_to(context.settings) if request.options else context.settings,
            context.triton,
            context.store,
            Progress(job),
            job_id=request.job_id,
        )
    delete_upload(payload, context.settings)
    return result.model_dump(mode="json")


# --- failure handling (runs in the worker, see dispatcher.worker) --------------------


# redis-py's connection errors (a Redis blip while saving progress) do not derive from
# the builtin ConnectionError.
_CONNECTION_ERRORS = (ConnectionError, RedisConnectionError, RedisTimeoutError)


def is_retryable(exc: BaseException) -> bool:
    """Transient failures and lost workers are retried; nothing else is."""
    return isinstance(exc, (errors.TransientError, AbandonedJobError, *_CONNECTION_ERRORS))


# Failures whose message a client may read: about its own media or its own URL.
_CLIENT_FACING = (errors.InputError, errors.FetchTransientError, errors.JobCancelledError)
# What a client reads for every other failure: the service's own trouble, whose text
# names internal hosts, paths and exception details. The worker's log has the text.
_SERVICE_MESSAGES = {
    "transient": "a service the job needs was unavailable",
    "upstream-unavailable": "a service the job needs was unavailable",
    "configuration": "the service is misconfigured",
}
_SERVICE_MESSAGE = "internal error"


def describe(exc: BaseException, job: Job) -> JobError:
    """The failure as clients see it: a stable type, a message, the stage it happened in.

    Messages about the client's input or URL, a timeout or a lost worker are given as
    they are; for the service's own failures (a bug, a misconfiguration, a backing
    service down) the client reads only what kind of failure it was and where: the
    details stay in the worker's log (`detail`).
    """
    # The pipeline names the stage a DfdError came from; else the last one reported.
    stage = getattr(exc, "stage", None) or job.meta.get("stage")
    if isinstance(exc, errors.DfdError):
        kind = exc.type
    elif isinstance(exc, AbandonedJobError):
        kind = "worker-lost"
    elif isinstance(exc, JobTimeoutException):
        kind = "timeout"
    elif isinstance(exc, _CONNECTION_ERRORS):
        kind = "transient"
    else:
        kind = "internal"
    if isinstance(exc, _CLIENT_FACING):
        message = str(exc)
    elif kind == "worker-lost":
        message = "worker died while processing (no heartbeat)"
    elif kind == "timeout":
        message = f"job: expected to finish within {job.timeout} s, took longer"
    else:
        what = _SERVICE_MESSAGES.get(kind, _SERVICE_MESSAGE)
        message = (
            f"{stage or 'job'}: {what} (the worker's log has the details under job id {job.id})"
        )
    return JobError(type=kind, message=message, stage=Stage(stage) if stage else None)


def detail(exc: BaseException) -> str:
    """The failure in full, for the worker's log."""
    return f"{type(exc).__name__}: {exc}"


def handle_job_exception(
    job: Job, exc_type: type, exc_value: BaseException, traceback: Any
) -> bool:
    """rq exception handler: cancel retries for non-retryable errors; record the error.

    rq calls it before deciding whether to retry (in the work horse, and in the registry
    cleanup that finds abandoned jobs), and retries only while ``job.retries_left > 0``.
    """
    if not is_retryable(exc_value):
        job.retries_left = 0
    error = describe(exc_value, job)
    job.meta["error"] = error.model_dump(mode="json")
    job.save_meta()
    final = not job.should_retry
    log.warning(
        "job failed",
        extra={
            "job_id": job.id,
            "error_type": error.type,
            "stage": error.stage.value if error.stage else None,
            "detail": detail(exc_value),
            "final": final,
        },
    )
    if final:
        delete_upload(_payload_of(job), settings())
    return True  # let rq's own handling (retry or move to failed) go on


def handle_horse_killed(job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
    """rq's work-horse-killed hook: the process running the job died (OOM, SIGKILL)."""
    signal_no = os.WTERMSIG(ret_val) if ret_val and os.WIFSIGNALED(ret_val) else None
    meta = job.get_meta(refresh=True)
    stage = meta.get("stage")
    if _ran_past_timeout(job):
        # rq kills a horse that SIGALRM could not stop (stuck in C code) at timeout + 60 s:
        # that is the job's timeout, which retrying cannot fix.
        job.retries_left = 0
        error = JobError(
            type="timeout",
            message=f"job: expected to finish within {job.timeout} s, took longer",
            stage=Stage(stage) if stage else None,
        )
    else:
        error = JobError(
            type="worker-lost",
            message="worker died while processing"
            + (f" (signal {signal_no})" if signal_no else ""),
            stage=Stage(stage) if stage else None,
        )
    job.meta["error"] = error.model_dump(mode="json")
    job.save_meta()
    if not job.should_retry:
        delete_upload(_payload_of(job), settings())


def _ran_past_timeout(job: Job) -> bool:
    if not job.timeout or job.timeout <= 0 or job.started_at is None:
        return False
    started = job.started_at
    if started.tzinfo is None:  # rq keeps naive UTC times
        started = started.replace(tzinfo=UTC)
    return (datetime.now(UTC) - started).total_seconds() > job.timeout


def _payload_of(job: Job) -> dict[str, Any]:
    try:
        args = job.args
    except Exception:  # an undecodable job has no file to clean up
        return {}
    return args[0] if args and isinstance(args[0], dict) else {}


def delete_upload(payload: dict[str, Any], s: Settings) -> None:
    """Delete the job's uploaded file, if it is one of ours (inside ``uploads_dir``)."""
    source = payload.get("source") or {}
    if source.get("kind") != "upload" or not source.get("path"):
        return
    path = Path(source["path"]).resolve()
    root = s.uploads_dir.resolve()
    if root in path.parents:
        path.unlink(missing_ok=True)
