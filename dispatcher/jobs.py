"""The RQ entry point of a dfd job, and how its failures are classified.

``run_job(ctx, payload)`` is what the gateway enqueues (by the path
``dispatcher.jobs.run_job``, with the payload as its one argument). The worker passes
the :class:`WorkerContext` first, as arq passes ``ctx``: :class:`DfdJob` calls every
job function as ``func(ctx, *args, **kwargs)``. ``run_job`` validates the payload,
reports the attempt, stage and progress in ``job.meta`` (the status endpoint reads them
from there), runs the pipeline and returns the result document as JSON-ready data.

Which failures are retried is decided here, not by rq: rq's ``Retry`` retries on every
exception, so the worker installs :func:`handle_job_exception`, which runs before rq
decides and sets the job's remaining retries to zero (in Redis at once) for anything
that retrying cannot fix (an :class:`~dfd.errors.InputError`, a bug, a timeout). Only
transient errors and a lost worker are retried. The handler also records the error
(type, message, stage) in ``job.meta``.

A job's input (the uploaded file) is kept until its outcome is durably recorded: the
worker calls :func:`release_input` only after rq has written the result, or the final
failure, to Redis. A horse that dies, or a Redis that drops, before that leaves the file
for the retry, which redoes the work; nothing a retry reads is removed by the attempt
before it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
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
from dfd.ensemble import for_settings
from dfd.schemas import JobError, JobPayload, timestamp
from dfd.settings import Settings
from dfd.states import Stage
from dfd.tracing import job_span
from dispatcher.metrics import record_attempt_failure
from dispatcher.progress import Progress

log = logging.getLogger(__name__)


class InvalidPayloadError(errors.InputError):
    type = "invalid-payload"


class UploadLostError(errors.InternalError):
    """The job's uploaded file is gone before the job was done with it: the service's
    fault (a clean-up ran too early, shared storage lost it), never the user's."""

    type = "upload-lost"


class WorkerContext:
    """What a job needs beyond its payload: the worker's settings and its clients.

    The worker makes one in the process that runs the job (a gRPC channel must not be
    shared across rq's fork); each client is made on first use, so a job that fails
    before inference needs no Triton.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def triton(self) -> Any:
        """The Triton client.

        Raises:
            ConfigurationError: No Triton URL is set.
        """
        s = self.settings
        if not s.triton_url:
            raise errors.ConfigurationError(
                "worker: expected DFD_TRITON_URL (Triton's gRPC host:port), got none; `dfd serve` sets it"
            )
        from dispatcher.triton_client import TritonClient

        return TritonClient(
            s.triton_url,
            timeout_s=s.triton_timeout_s,
            retries=s.triton_retries,
            ensemble=for_settings(s),
        )

    @cached_property
    def store(self) -> Any:
        """The evidence store."""
        from dispatcher.store import make_store

        return make_store(self.settings)


class DfdJob(Job):
    """rq's job, run as ``func(ctx, *args, **kwargs)`` with the worker's context.

    The worker sets :attr:`context_factory` in the process that runs the job; it is
    called there, inside rq's error handling, so a misconfiguration fails the job with a
    message instead of killing the work horse.
    """

    context_factory: Callable[[], WorkerContext] | None = None

    def _execute(self) -> Any:
        if self.context_factory is None:
            raise errors.ConfigurationError(
                f"job {self.id}: expected to run under `dfd worker` (which passes the "
                "worker context), got a worker without one"
            )
        if self.func is None:
            raise errors.InternalError(f"job {self.id}: its function could not be resolved")
        return self.func(self.context_factory(), *self.args, **self.kwargs)


def worker_settings(job: Job) -> Settings:
    """The settings of the worker running ``job``, for what rq calls with the job but
    without a context (its success and failure callbacks)."""
    factory = getattr(job, "context_factory", None)
    if factory is None:
        raise errors.ConfigurationError(
            f"job {job.id} callback: expected to run under `dfd worker` (which passes the "
            "worker context), got a worker without one"
        )
    return factory().settings


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


def run_job(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Analyse one video; the function the gateway enqueues.

    The upload is not deleted here: the worker releases it once the result is recorded
    (:func:`release_input`), so a retry after a lost result finds it.

    Returns:
        ``dfd.schemas.Result`` as JSON-ready data.

    Raises:
        UploadLostError: The uploaded file is gone (the service's fault, not the input's).
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
    source = request.source
    if source.kind == "upload" and source.path and not Path(source.path).is_file():
        raise UploadLostError(
            f"job {request.job_id}: expected its uploaded file, it is gone (attempt {attempt})"
        )
    from dispatcher.known_fakes import RedisBank
    from dispatcher.pipeline import analyze
    from dispatcher.rollout import JobRollout

    # The bank of known fakes lives in the queue's Redis; its connection is the job's.
    bank = RedisBank(job.connection, ctx.settings.result_ttl_s) if job is not None else None
    # so do the model rollouts under way (one read per job)
    rollout = JobRollout.load(job.connection, request.job_id) if job is not None else None
    traceparent = job.meta.get("traceparent") if job is not None else None
    with job_span(request.job_id, source.kind, attempt, traceparent):
        result = analyze(
            source,
            request.options.applied_to(ctx.settings) if request.options else ctx.settings,
            ctx.triton,
            ctx.store,
            Progress(job),
            job_id=request.job_id,
            bank=bank,
            rollout=rollout,
        )
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
    "upload-lost": "the service lost the uploaded file; upload it again",
    "probe-killed": "the media prober was stopped by the service (not by the file)",
    "out-of-memory": "the worker ran out of memory",
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
    settings: Settings, job: Job, exc_type: type, exc_value: BaseException, traceback: Any
) -> bool:
    """rq exception handler: cancel retries for non-retryable errors; record the error.

    rq calls it before deciding whether to retry (in the work horse, and in the registry
    clean-up that finds abandoned jobs), and retries only while ``job.retries_left > 0``.
    The worker installs it with its settings bound (``functools.partial``). A cancelled
    retry is written to Redis at once, so every later path (a horse that dies before rq
    records the failure) sees the same decision.
    """
    if not is_retryable(exc_value):
        job.retries_left = 0
        job.connection.hset(job.key, "retries_left", 0)
    error = describe(exc_value, job)
    job.meta["error"] = error.model_dump(mode="json")
    job.save_meta()
    record_attempt_failure(job.connection, error)
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
    if final and isinstance(exc_value, AbandonedJobError):
        # The registry clean-up has no hook after it records the failure; the job will
        # not run again (no retries left, in Redis), so its input can go now.
        release_input(job, settings)
    return True  # let rq's own handling (retry or move to failed) go on


def handle_horse_killed(
    settings: Settings, job: Job, retpid: int, ret_val: int, rusage: Any
) -> None:
    """rq's work-horse-killed hook: the process running the job died (OOM, SIGKILL).

    rq records the failure (or the retry) right after; the worker releases the input
    once that is written.
    """
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
    record_attempt_failure(job.connection, error)


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


def release_input(job: Job, settings: Settings) -> None:
    """Delete the job's uploaded file: call only once the job's outcome is recorded.

    Idempotent: a second call (a repeated completion) finds nothing to delete.
    """
    delete_upload(_payload_of(job), settings)


def delete_upload(payload: dict[str, Any], s: Settings) -> None:
    """Delete the job's uploaded file, if it is one of ours (inside ``uploads_dir``)."""
    source = payload.get("source") or {}
    if source.get("kind") != "upload" or not source.get("path"):
        return
    path = Path(source["path"]).resolve()
    root = s.uploads_dir.resolve()
    if root in path.parents:
        path.unlink(missing_ok=True)
