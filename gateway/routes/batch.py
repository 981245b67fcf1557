"""``POST /api/batch`` and ``GET /api/batch/{id}``: many URLs in one request, one webhook.

Every item is vetted as ``POST /api/analyze`` vets its URL before anything is enqueued:
one refused item refuses the batch, naming the item (``items[2]: ...``). Rate limits and
the tenant's quota count each item. The batch's record (its tenant and job ids) lives in
Redis as long as failed jobs do; each job carries ``batchId``. With a ``callback_url``
one webhook is delivered when the whole batch has ended: an rq job depending on every
job of the batch (``dispatcher.webhooks.deliver_batch``).

The same route takes a ``multipart/form-data`` body with several ``file`` parts, one job
per file (``gateway.routes.batch_files``); which one is read from ``Content-Type``, so
the JSON body is parsed here rather than by FastAPI (its messages are the same).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from dfd.errors import DfdError, UpstreamUnavailableError
from dfd.jobid import batch_key, new_job_id
from dfd.schemas import JobSource
from dfd.states import FINAL_STATES, JobState, Priority
from dfd.urlcheck import check_url
from gateway.audit import record
from gateway.batches import submit_batch
from gateway.deps import GatewayState, State, get_client_ip, require_api_key
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.queue import view_json
from gateway.routes.accepted import job_meta
from gateway.routes.analyze import check_syntax, resolve, vet_callback_url
from gateway.routes.batch_files import create_file_batch
from gateway.schemas import URL_PATTERN, problem_responses
from gateway.tenants import charge_tenant, check_priority, job_visible, tenant_name

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


class BatchJob(BaseModel):
    jobId: str
    status: JobState
    index: int | None = Field(None, description="A multipart batch: the file part's index.")
    filename: str | None = Field(None, description="A multipart batch: the file's name.")


class RefusedPart(BaseModel):
    index: int = Field(description="The file part's index among the body's file parts.")
    filename: str | None
    type: str = Field(description="The problem type, as a whole request's would be.")
    status: int = Field(description="The HTTP status this file alone would have got.")
    detail: str


class BatchAccepted(BaseModel):
    batchId: str
    jobs: list[BatchJob]
    refused: list[RefusedPart] = Field(
        default_factory=list, description="A multipart batch: files refused on their own."
    )


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


def _inline_refs(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with its ``#/$defs/..`` references replaced by what they name."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.rsplit("/", 1)[1]], defs)
        return {k: _inline_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(v, defs) for v in schema]
    return schema


def _json_schema() -> dict[str, Any]:
    schema = BatchRequest.model_json_schema()
    return _inline_refs(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


def is_multipart(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return kind == "multipart/form-data"


async def parse_json_batch(request: Request) -> BatchRequest:
    """The JSON body, refused with the messages FastAPI's own parsing gives.

    Raises:
        InvalidRequestError: no body, not JSON, or not a JSON object.
        RequestValidationError: a JSON object not of the documented shape.
    """
    content_type = request.headers.get("content-type", "")
    mime = content_type.split(";", 1)[0].strip().lower()
    raw = await request.body()
    if not raw:
        raise InvalidRequestError("request: expected a JSON body, got none")
    if content_type and mime != "application/json" and not mime.endswith("+json"):
        raise InvalidRequestError(
            "request: expected a JSON body with Content-Type: application/json (or a "
            f"multipart/form-data body with 'file' parts), got {content_type}"
        )
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"request: expected the body to be JSON, got invalid JSON at character {exc.pos} "
            f"({exc.msg})"
        ) from None
    except ValueError as exc:  # not UTF-8
        raise InvalidRequestError(f"request: expected the body to be JSON, got {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequestError(
            "request: expected the body to be a JSON object, got another JSON value"
        )
    try:
        return BatchRequest.model_validate(doc)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        ) from None


_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary", "minLength": 1},
                            "minItems": 1,
                            "description": "One part per video, up to DFD_MAX_BATCH_ITEMS; "
                            "each is held to what POST /api/upload accepts.",
                        },
                        "options": {
                            "type": "string",
                            "description": "JobOptions as JSON, for every file.",
                        },
                        "callback_url": {
                            "type": "string",
                            "maxLength": 4096,
                            "pattern": URL_PATTERN,
                            "description": "Gets one webhook when every job has ended.",
                        },
                    },
                },
                "encoding": {"file": {"contentType": "video/*, audio/*, application/octet-stream"}},
            },
        },
    }
}


@router.post(
    "/api/batch",
    status_code=202,
    response_model=BatchAccepted,
    summary="Analyze many video URLs, or many uploaded files, at once",
    description='JSON `{"items": [{"url"}...]}`, or multipart with several `file` parts '
    "(each becomes a job; a file refused on its own is listed in `refused` and the others go "
    "on). `?priority=` applies to a multipart batch; a JSON batch gives it in its body.",
    responses=problem_responses(400, 401, 403, 408, 413, 415, 422, 429, 503),
    openapi_extra=_BATCH_BODY,
)
async def create_batch(
    request: Request, state: State, priority: Priority | None = None
) -> JSONResponse:
    if is_multipart(request):
        return await create_file_batch(request, state, priority or Priority.DEFAULT)
    body = await parse_json_batch(request)
    if priority is not None:
        raise InvalidRequestError(
            f"batch: a JSON batch gives its priority in the body, got ?priority={priority.value}"
        )
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
    jobs = [(new_job_id(), JobSource(kind="url", url=url)) for url in urls]
    try:
        ids = await run_in_threadpool(
            submit_batch, state, batch_id, jobs, body.priority, job_meta(request), callback
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
    if record.get("refused"):
        doc["refused"] = record["refused"]  # a multipart batch's files refused on their own
    if record.get("webhook"):
        doc["webhook"] = record["webhook"]
    return JSONResponse(doc, headers={"Cache-Control": "no-store"})
