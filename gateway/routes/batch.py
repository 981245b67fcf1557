"""``POST /api/batch`` and ``GET /api/batch/{id}``: many URLs in one request, one webhook.

Every item is vetted as ``POST /api/analyze`` vets its URL before anything is enqueued:
one refused item refuses the batch, naming the item (``items[2]: ...``). Rate limits and
the tenant's quota count each item. The batch's record (its tenant and job ids) lives in
Redis as long as failed jobs do; each job carries ``batchId``. With a ``callback_url``
one webhook is delivered when the whole batch has ended: an rq job depending on every
job of the batch (``dispatcher.webhooks.deliver_batch``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from dfd.errors import DfdError, UpstreamUnavailableError
from dfd.jobid import batch_key, new_job_id
from dfd.schemas import JobPayload, JobSource, timestamp
from dfd.states import FINAL_STATES, JobState, Priority
from dfd.urlcheck import check_url
from gateway.audit import record
from gateway.deps import GatewayState, State, get_client_ip, require_api_key
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.queue import view_json
from gateway.routes.accepted import job_meta
from gateway.routes.analyze import check_syntax, resolve, vet_callback_url
from gateway.schemas import URL_PATTERN, problem_responses
from gateway.tenants import charge_tenant, check_priority, job_visible, tenant_name
from gateway.webhooks import DELIVER_BATCH_FUNC, delivery_queue_name, enqueue_delivery

router = APIRouter(tags=["batches"])


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=4096, pattern=URL_PATTERN, description="A public video URL."
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem] = Field(min_length=1, description="Up to DFD_MAX_BATCH_ITEMS URLs.")
    callback_url: str | None = Field(
        None,
        max_length=4096,
        pattern=URL_PATTERN,
        description="Gets one webhook when every job has ended.",
    )
    priority: Priority = Priority.DEFAULT


class BatchAccepted(BaseModel):
    batchId: str
    jobs: list[dict[str, str]]


async def _vet(index: int, url: str, state: GatewayState) -> str:
    try:
        check_syntax(url)
        vetted = check_url(url, state.settings)
        parts = urllib.parse.urlsplit(vetted)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await resolve(parts.hostname or "", port, state.settings)
        return vetted
    except DfdError as exc:
        exc.args = (f"items[{index}]: {exc}",)  # the same refusal, naming the item
        exc.message = str(exc.args[0])
        raise


def _submit(
    state: GatewayState,
    batch_id: str,
    urls: list[str],
    priority: Priority,
    meta: dict[str, Any],
    callback: str | None,
) -> list[str]:
    s = state.settings
    ids = [new_job_id() for _ in urls]
    record = {"batchId": batch_id, "tenant": meta.get("tenant"), "jobs": ids}
    record["createdAt"] = timestamp()
    if callback is not None:
        record["webhook"] = {"status": "pending", "attempts": 0}
    ttl = max(s.result_ttl_s, s.failure_ttl_s)
    state.redis.set(batch_key(batch_id), json.dumps(record), ex=ttl)
    jobs = [
        state.queue.enqueue(
            JobPayload(job_id=job_id, source=JobSource(kind="url", url=url), priority=priority),
            extra_meta={**meta, "batch_id": batch_id},
        )
        for job_id, url in zip(ids, urls, strict=True)
    ]
    if callback is not None:
        enqueue_delivery(
            state.queue.queue(delivery_queue_name()),
            jobs,
            DELIVER_BATCH_FUNC,
            (batch_id, callback),
            s,
        )
    return ids


@router.post(
    "/api/batch",
    status_code=202,
    response_model=BatchAccepted,
    summary="Analyze many video URLs at once",
    responses=problem_responses(400, 401, 403, 413, 422, 429, 503),
)
async def create_batch(body: BatchRequest, request: Request, state: State) -> JSONResponse:
    settings = state.settings
    count = len(body.items)
    if count > settings.max_batch_items:
        raise InvalidRequestError(
            f"batch: expected at most {settings.max_batch_items} items, got {count}"
        )
    # The limit first, each item counted: a wrong key costs quota too.
    ip = get_client_ip(request, state)
    decision = await state.limiter.hit(ip, state.limiter.policies_for("analyze"), cost=count)
    require_api_key(request, state)
    check_priority(request, body.priority)
    callback = await vet_callback_url(body.callback_url, settings) if body.callback_url else None
    urls = list(await asyncio.gather(*(_vet(i, it.url, state) for i, it in enumerate(body.items))))
    await charge_tenant(request, state.limiter, "analyze", cost=count)
    batch_id = new_job_id()
    try:
        ids = await run_in_threadpool(
            _submit, state, batch_id, urls, body.priority, job_meta(request), callback
        )
    except RedisError as exc:
        raise UpstreamUnavailableError(
            f"queue: expected Redis to accept batch {batch_id}, got {exc}"
        ) from exc
    state.metrics.enqueued.labels("url", body.priority.value).inc(count)
    state.metrics.tenant_jobs.labels(tenant_name(request) or "none", "url").inc(count)
    await record(state, request, "batch", batch_id=batch_id, jobs=ids, callback_url=callback)
    return JSONResponse(
        {
            "batchId": batch_id,
            "jobs": [{"jobId": j, "status": JobState.WAITING.value} for j in ids],
        },
        status_code=202,
        headers={"Location": f"/api/batch/{batch_id}", **(decision.headers() if decision else {})},
    )


@router.get(
    "/api/batch/{batch_id}",
    summary="A batch: counts by state and each job's view",
    responses=problem_responses(401, 404, 429, 503),
)
async def get_batch(batch_id: str, request: Request, state: State) -> Response:
    ip = get_client_ip(request, state)
    await state.limiter.hit(ip, state.limiter.policies_for(None))
    require_api_key(request, state)
    missing = NotFoundError(
        f"batch: expected a known batch id, got {batch_id!r} (unknown or expired)"
    )
    try:
        raw = await state.aredis.get(batch_key(batch_id))
        record = json.loads(raw) if raw else None
        if record is None or not job_visible(request, {"tenant": record.get("tenant")}):
            raise missing
        async with state.aredis.pipeline(transaction=False) as pipe:
            for job_id in record["jobs"]:
                state.queue.add_view(pipe, job_id)
            replies = await pipe.execute()
    except RedisError as exc:
        raise UpstreamUnavailableError(
            f"queue: expected Redis to answer for batch {batch_id}, got {exc}"
        ) from exc
    views = []
    for i in range(0, len(replies), 2):
        body = view_json(record["jobs"][i // 2], replies[i], replies[i + 1], resign=state.resign)
        if body is not None:
            views.append(json.loads(body))
    counts: dict[str, int] = {}
    for view in views:
        counts[view["status"]] = counts.get(view["status"], 0) + 1
    doc = {
        "batchId": batch_id,
        "createdAt": record.get("createdAt"),
        "done": all(JobState(v["status"]) in FINAL_STATES for v in views),
        "counts": counts,
        "jobs": views,
    }
    if record.get("webhook"):
        doc["webhook"] = record["webhook"]
    return JSONResponse(doc, headers={"Cache-Control": "no-store"})
