"""How the job-creating routes enqueue and answer ``202 Accepted``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from rq.job import Job
from starlette.concurrency import run_in_threadpool

from dfd.errors import UpstreamUnavailableError
from dfd.schemas import JobPayload
from dfd.states import JobState
from gateway.audit import record
from gateway.deps import GatewayState
from gateway.tenants import tenant_name
from gateway.webhooks import DELIVER_FUNC, delivery_queue_name, enqueue_delivery


def submit(
    state: GatewayState,
    payload: JobPayload,
    meta: dict[str, Any],
    callback_url: str | None = None,
) -> Job:
    """Enqueue the job and, with a ``callback_url``, its webhook delivery after it."""
    if callback_url is not None:
        meta = {**meta, "webhook": {"status": "pending", "attempts": 0}}
    job = state.queue.enqueue(payload, extra_meta=meta)
    if callback_url is not None:
        enqueue_delivery(
            state.queue.queue(delivery_queue_name()),
            [job],
            DELIVER_FUNC,
            (job.id, callback_url),
            state.settings,
        )
    return job


def job_meta(request: Request) -> dict[str, Any]:
    """What the gateway records on a job it accepts: its tenant."""
    tenant = tenant_name(request)
    return {"tenant": tenant} if tenant is not None else {}


async def enqueue(
    state: GatewayState,
    payload: JobPayload,
    request: Request,
    callback_url: str | None = None,
) -> None:
    """Enqueue ``payload`` (rq's client is synchronous: run it off the event loop).

    Once started, the enqueue is seen through even if the request is cancelled meanwhile
    (the request timeout, a disconnect): rq's call runs in a thread that cancellation
    cannot stop, so the job lands in Redis anyway, and answering 408 then would leave a
    queued job whose id the client never learns (and, for an upload, whose file the
    route deletes). The wait is bounded by ``DFD_REDIS_TIMEOUT_S``; the request then
    answers as if it had not been cancelled.

    Raises:
        UpstreamUnavailableError: Redis did not take the job.
    """
    work = asyncio.ensure_future(
        run_in_threadpool(submit, state, payload, job_meta(request), callback_url)
    )
    try:
        while not work.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(work)
        work.result()
    except RedisError as exc:
        raise UpstreamUnavailableError(
            f"queue: expected Redis to accept job {payload.job_id}, got {exc}"
        ) from exc
    state.metrics.enqueued.labels(payload.source.kind, payload.priority).inc()
    state.metrics.tenant_jobs.labels(tenant_name(request) or "none", payload.source.kind).inc()
    await record(
        state,
        request,
        "submit",
        job_id=payload.job_id,
        kind=payload.source.kind,
        priority=payload.priority.value,
        url=payload.source.url,
        callback_url=callback_url,
        options=payload.options.model_dump(mode="json", exclude_none=True)
        if payload.options
        else None,
    )


def accepted(job_id: str, headers: dict[str, str]) -> JSONResponse:
    """``202`` with ``{"jobId", "status"}`` and the job's ``Location``."""
    return JSONResponse(
        {"jobId": job_id, "status": JobState.WAITING.value},
        status_code=202,
        headers={"Location": f"/api/job/{job_id}", **headers},
    )
