"""``GET /api/job/{id}/events``: a job's progress as server-sent events, then its end.

Each change of the job (state, stage, progress) is one ``event: progress`` whose data is
``{"status", "stage", "progress", "attempt", "updatedAt"}`` and whose ``id`` is the
worker's write sequence (a change of state alone, such as queued to started before the
worker's first write, repeats the id it follows); the job's end is one ``event: done`` with the final job view
(as ``GET /api/job/{id}`` gives it), after which the stream ends. A client reconnecting
with ``Last-Event-ID`` gets only what changed after that event. A stream stays open at
most ``events_max_s`` (and under the gateway's request timeout); EventSource and the SDK
reconnect by themselves. Comment lines keep idle connections open through proxies.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from dfd.errors import UpstreamUnavailableError
from dfd.states import FINAL_STATES, JobState
from gateway.deps import GatewayState, State, rate_limited, require_api_key
from gateway.errors import NotFoundError
from gateway.queue import SERIALIZER, view_json
from gateway.schemas import problem_responses
from gateway.tenants import job_visible

router = APIRouter(tags=["jobs"])

_KEEPALIVE_S = 15.0
_RETRY_MS = 1000


async def read_job(
    state: GatewayState, job_id: str, request: Request
) -> tuple[dict[str, Any], int, bytes] | None:
    """The job's view (parsed), its progress sequence and the view's bytes; ``None`` if
    unknown or another tenant's."""
    try:
        async with state.aredis.pipeline(transaction=False) as pipe:
            if not state.queue.add_view(pipe, job_id):
                return None
            fields, latest = await pipe.execute()
    except RedisError as exc:
        raise UpstreamUnavailableError(
            f"queue: expected Redis to answer for job {job_id}, got {exc}"
        ) from exc
    meta = SERIALIZER.loads(fields[1]) if fields[1] else {}
    body = (
        view_json(job_id, fields, latest, resign=state.resign)
        if job_visible(request, meta)
        else None
    )
    if body is None:
        return None
    return json.loads(body), int(meta.get("seq") or 0), body


def _event(name: str, data: str, event_id: str) -> bytes:
    return f"event: {name}\nid: {event_id}\ndata: {data}\n\n".encode()


def _last_seq(header: str | None) -> int:
    try:
        return int(header or "-1")
    except ValueError:
        return -1  # not one of ours ("done" included): start afresh


@router.get(
    "/api/job/{job_id}/events",
    summary="A job's progress as server-sent events",
    description="`event: progress` on each change (stage, 0..1 progress), then `event: done` "
    "with the final job view; reconnect with `Last-Event-ID`.",
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **problem_responses(401, 404, 429, 503),
    },
    dependencies=[Depends(rate_limited(None)), Depends(require_api_key)],
)
async def job_events(job_id: str, request: Request, state: State) -> StreamingResponse:
    first = await read_job(state, job_id, request)
    if first is None:
        raise NotFoundError(f"job: expected a known job id, got {job_id!r} (unknown or expired)")
    settings = state.settings
    lifetime_s = min(settings.events_max_s, max(settings.request_timeout_s - 5.0, 1.0))
    last = _last_seq(request.headers.get("last-event-id"))

    async def stream() -> AsyncIterator[bytes]:
        nonlocal last
        yield f"retry: {_RETRY_MS}\n\n".encode()
        deadline = time.monotonic() + lifetime_s
        quiet_since = time.monotonic()
        current: tuple[dict[str, Any], int, bytes] | None = first
        reported_status: str | None = None
        while True:
            if current is None:  # expired while we watched
                return
            view, seq, body = current
            if JobState(view["status"]) in FINAL_STATES:
                yield _event("done", body.decode(), "done")
                return
            # A new write, or a state change without one (active -> waiting for a retry).
            if seq > last or (reported_status is not None and view["status"] != reported_status):
                data = {
                    k: view.get(k) for k in ("status", "stage", "progress", "attempt", "updatedAt")
                }
                yield _event("progress", json.dumps(data, separators=(",", ":")), str(seq))
                last, reported_status = seq, view["status"]
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > _KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            if time.monotonic() > deadline or await request.is_disconnected():
                return
            await asyncio.sleep(settings.events_poll_interval_s)
            try:
                current = await read_job(state, job_id, request)
            except UpstreamUnavailableError:
                return  # Redis went away: end the stream; the client reconnects

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
