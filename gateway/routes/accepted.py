"""How the job-creating routes enqueue and answer ``202 Accepted``."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from dfd.errors import UpstreamUnavailableError
from dfd.schemas import JobPayload
from dfd.states import JobState
from gateway.deps import GatewayState


async def enqueue(state: GatewayState, payload: JobPayload) -> None:
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
    work = asyncio.ensure_future(run_in_threadpool(state.queue.enqueue, payload))
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


def accepted(job_id: str, headers: dict[str, str]) -> JSONResponse:
    """``202`` with ``{"jobId", "status"}`` and the job's ``Location``."""
    return JSONResponse(
        {"jobId": job_id, "status": JobState.WAITING.value},
        status_code=202,
        headers={"Location": f"/api/job/{job_id}", **headers},
    )
