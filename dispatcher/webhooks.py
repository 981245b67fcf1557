"""Webhook delivery: POST a finished job's view to its ``callback_url``, signed.

The gateway enqueues :func:`deliver` (by path) when it accepts a job with a
``callback_url``, as an rq job that depends on the analysis job with failure allowed:
rq runs it once the job has ended, however it ended (completed, failed, cancelled, its
worker lost), and never while it is still being retried. The body is the final job
view (``dfd.schemas.JobView``, as ``GET /api/job/{id}`` gives it, evidence links signed
at delivery), signed as :mod:`dfd.webhook_signature` describes.

The callback URL passes the same SSRF checks as fetched media, here at delivery (every
address vetted, the connection pinned to it, redirects not followed) as at submit.
Network errors, timeouts, 5xx, 408 and 429 are retried by rq with backoff
(``webhook_retries``, ``webhook_backoff_s`` doubling: the gateway sets the policy); any
other answer is final. Every try is recorded in the job's ``meta["webhook"]``, which the
job view shows as ``webhook``: ``pending``, ``retrying``, ``delivered`` or ``failed``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from rq import get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from dfd import errors, signing
from dfd.jobid import batch_key
from dfd.s3_presign import s3_link_resigner
from dfd.schemas import JobError, WebhookDelivery, timestamp
from dfd.settings import Settings
from dfd.states import JobState
from dfd.webhook_signature import headers as signed_headers
from dispatcher.guarded_http import GuardedClient
from dispatcher.jobs import WorkerContext

log = logging.getLogger(__name__)

DELIVER_FUNC = "dispatcher.webhooks.deliver"
_RETRY_STATUS = (408, 425, 429)


class WebhookFailedError(errors.TransientError):
    """The receiver could not be reached or answered 5xx/408/429; retried."""

    type = "webhook-failed"


class WebhookRefusedError(errors.InputError):
    """The receiver refused the delivery (4xx), or its URL is refused; not retried."""

    type = "webhook-refused"


def final_view(job: Job) -> dict[str, Any]:
    """The job's view as ``GET /api/job/{id}`` gives it once the job has ended."""
    status = job.get_status(refresh=True)
    meta = job.get_meta(refresh=True)
    view: dict[str, Any] = {"jobId": job.id, "attempt": int(meta.get("attempt") or 1)}
    if status == JobStatus.FINISHED:
        view["status"] = JobState.COMPLETED.value
        view["result"] = job.return_value()
    else:
        recorded = meta.get("error")
        error = (
            JobError.model_validate(recorded)
            if isinstance(recorded, dict) and recorded.get("message")
            else JobError(type="internal", message="job: internal error")
        )
        view["status"] = (
            JobState.CANCELLED if error.type == "cancelled" else JobState.FAILED
        ).value
        view["error"] = error.model_dump(mode="json", exclude_none=True)
    stamps = [
        t.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in (job.created_at, job.ended_at) if t is not None
    ]
    view["createdAt"] = stamps[0] if stamps else None
    view["updatedAt"] = max([*stamps[1:], meta.get("updated_at") or ""]) or None
    if meta.get("batch_id"):
        view["batchId"] = meta["batch_id"]
    return {k: v for k, v in view.items() if v is not None}


def post(url: str, body: bytes, settings: Settings) -> int:
    """POST ``body`` to ``url`` through the guarded client; the receiver's status code.

    Raises:
        RejectedURLError: the URL (or an address it resolves to) is refused.
        FetchTransientError: no connection, or no answer in time.
    """
    secret = settings.webhook_secret
    if secret is None:
        raise errors.ConfigurationError("webhook: DFD_WEBHOOK_SECRET is unset on the worker")
    timeout = settings.webhook_timeout_s
    guarded = settings.model_copy(
        update={
            "fetch_connect_timeout_s": timeout,
            "fetch_read_timeout_s": timeout,
            "fetch_max_redirects": 0,  # a receiver answers; it does not send us elsewhere
        }
    )
    request_headers = {
        "Content-Type": "application/json",
        **signed_headers(secret.get_secret_value().encode(), body),
    }
    with (
        GuardedClient(guarded) as client,
        client.stream("POST", url, headers=request_headers, content=body) as response,
    ):
        return response.status_code


def record(job: Job, outcome: WebhookDelivery) -> None:
    meta = job.get_meta(refresh=True)
    meta["webhook"] = outcome.model_dump(mode="json", exclude_none=True)
    job.meta = meta
    job.save_meta()


Recorder = Callable[[WebhookDelivery], None]


def send(
    url: str, body: bytes, attempts: int, last_try: bool, save: Recorder, settings: Settings
) -> dict[str, Any]:
    """One try at delivering ``body``; every outcome is passed to ``save``.

    Raises:
        WebhookFailedError: worth another try (rq retries it).
        WebhookRefusedError: final.
    """
    try:
        code = post(url, body, settings)
    except errors.InputError as exc:  # refused by the SSRF checks, or a redirect
        save(WebhookDelivery(status="failed", attempts=attempts, error=str(exc)))
        raise WebhookRefusedError(f"webhook: {exc}") from exc
    except errors.TransientError as exc:
        status = "failed" if last_try else "retrying"
        save(WebhookDelivery(status=status, attempts=attempts, error=str(exc)))
        raise WebhookFailedError(f"webhook: {exc}") from exc
    if 200 <= code < 300:
        save(
            WebhookDelivery(
                status="delivered", attempts=attempts, statusCode=code, deliveredAt=timestamp()
            )
        )
        return {"statusCode": code, "attempts": attempts}
    message = f"webhook: expected a 2xx answer from the receiver, got {code}"
    retry = code >= 500 or code in _RETRY_STATUS
    status = "retrying" if retry and not last_try else "failed"
    save(WebhookDelivery(status=status, attempts=attempts, statusCode=code, error=message))
    raise (WebhookFailedError if retry else WebhookRefusedError)(message)


def _current() -> Job:
    current = get_current_job()
    if current is None:
        raise errors.InternalError("webhook: deliveries run as rq jobs")
    return current


def _signed_links(body: bytes, settings: Settings) -> bytes:
    """Evidence links signed now, as a read of the job would sign them."""
    body = signing.resign_links(body, signing.load_secret(settings), settings.evidence_url_ttl_s)
    return s3_link_resigner(settings)(body) if settings.store == "s3" else body


def deliver(ctx: WorkerContext, job_id: str, url: str) -> dict[str, Any]:
    """The rq job: deliver job ``job_id``'s final view to ``url`` (one try; rq retries)."""
    current = _current()
    target = Job.fetch(job_id, connection=current.connection, serializer=JSONSerializer)
    body = _signed_links(
        json.dumps(final_view(target), separators=(",", ":")).encode(), ctx.settings
    )
    attempts = int((target.meta.get("webhook") or {}).get("attempts") or 0) + 1
    # rq counts the retries left down to 0
    return send(
        url, body, attempts, not current.retries_left, lambda o: record(target, o), ctx.settings
    )


def batch_view(connection: Any, batch_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The batch's stored record and its final view: counts by state and each job's view."""
    raw = connection.get(batch_key(batch_id))
    if raw is None:
        raise errors.InternalError(f"webhook: batch {batch_id} expired before its delivery")
    stored = json.loads(raw)
    views = []
    for job_id in stored["jobs"]:
        try:
            job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            continue
        views.append(final_view(job))
    counts: dict[str, int] = {}
    for view in views:
        counts[view["status"]] = counts.get(view["status"], 0) + 1
    return stored, {"batchId": batch_id, "done": True, "counts": counts, "jobs": views}


def deliver_batch(ctx: WorkerContext, batch_id: str, url: str) -> dict[str, Any]:
    """The rq job: deliver the batch's final view to ``url`` once all its jobs ended."""
    current = _current()
    connection = current.connection
    stored, view = batch_view(connection, batch_id)
    body = _signed_links(json.dumps(view, separators=(",", ":")).encode(), ctx.settings)
    attempts = int((stored.get("webhook") or {}).get("attempts") or 0) + 1

    def save(outcome: WebhookDelivery) -> None:
        latest = json.loads(connection.get(batch_key(batch_id)) or "{}") or stored
        latest["webhook"] = outcome.model_dump(mode="json", exclude_none=True)
        connection.set(batch_key(batch_id), json.dumps(latest), keepttl=True)

    return send(url, body, attempts, not current.retries_left, save, ctx.settings)
