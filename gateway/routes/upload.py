"""``POST /api/upload``: a video streamed to shared storage, then enqueued."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from dfd.errors import DfdError, TooLargeError
from dfd.jobid import new_job_id
from dfd.schemas import JobOptions, JobPayload, JobSource
from gateway.deps import (
    ClientIP,
    GatewayState,
    State,
    rate_limit_headers,
    rate_limited,
    require_api_key,
)
from gateway.errors import InvalidRequestError
from gateway.routes.accepted import accepted, enqueue
from gateway.routes.analyze import check_options, vet_callback_url
from gateway.schemas import URL_PATTERN, JobAccepted, Priority, problem_responses
from gateway.tenants import charge_tenant, check_priority
from gateway.uploads import BODY_OVERHEAD_BYTES, receive_upload

router = APIRouter(tags=["jobs"])

VIDEO_TYPES = ("video/*", "application/octet-stream")

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "minLength": 1},
                        "options": {
                            "type": "string",
                            "description": "JobOptions as JSON: detectors, weights, threshold.",
                        },
                        "callback_url": {
                            "type": "string",
                            "maxLength": 4096,
                            "pattern": URL_PATTERN,
                        },
                    },
                },
                # The container is sniffed from the bytes: anything else is 415.
                "encoding": {"file": {"contentType": ", ".join(VIDEO_TYPES)}},
            }
        },
    }
}


def parse_options(raw: str | None) -> JobOptions | None:
    """The ``options`` form field: ``JobOptions`` as JSON.

    Raises:
        InvalidRequestError: not JSON, or not of the documented shape.
    """
    if not raw:
        return None
    try:
        return JobOptions.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidRequestError(
            f"options: expected JSON options ({where or 'body'}: {first.get('msg')}), got {raw[:100]!r}"
        ) from None


def refuse_declared_size(request: Request, most: int, message: str) -> None:
    """Refuse a body whose ``Content-Length`` is over ``most`` before any of it is read
    (``message`` ends with the declared length) and close the connection.

    Raises:
        TooLargeError: it is.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > most:
        refused = TooLargeError(f"{message}{declared}")
        refused.headers = {"Connection": "close"}  # type: ignore[attr-defined]
        raise refused


@asynccontextmanager
async def receiving(state: GatewayState, ip: str, what: str) -> AsyncIterator[None]:
    """Hold one of ``ip``'s upload slots while a multipart body is received; a client
    gone mid-body is the request's error, and a body refused mid-way closes the
    connection rather than let the server drain the rest.

    Raises:
        InvalidRequestError: the client disconnected before the body was complete.
    """
    slot = await state.limiter.acquire_upload_slot(ip)
    try:
        yield
    except ClientDisconnect as exc:
        raise InvalidRequestError(
            f"{what}: the client disconnected before the body was complete"
        ) from exc
    except DfdError as exc:
        exc.headers = {**getattr(exc, "headers", {}), "Connection": "close"}  # type: ignore[attr-defined]
        raise
    finally:
        await state.limiter.release_upload_slot(slot)


@router.post(
    "/api/upload",
    status_code=202,
    response_model=JobAccepted,
    summary="Upload a video for analysis",
    description="Multipart field `file`. The body is streamed to disk; the size cap and the "
    "container type (by magic bytes) are checked while it arrives. Poll `Location`.",
    responses=problem_responses(400, 401, 408, 413, 415, 429, 503),
    openapi_extra=_MULTIPART_BODY,
    # The limit first: a wrong key costs quota too, so keys cannot be guessed without limit.
    dependencies=[Depends(rate_limited("upload")), Depends(require_api_key)],
)
async def upload(
    request: Request, state: State, ip: ClientIP, priority: Priority = Priority.DEFAULT
) -> JSONResponse:
    settings = state.settings
    # A body announcing itself as too large is refused before any of it is read.
    refuse_declared_size(
        request,
        settings.max_upload_bytes + BODY_OVERHEAD_BYTES,
        f"upload: expected at most {settings.max_upload_bytes} bytes, got a body of ",
    )
    check_priority(request, priority)
    await charge_tenant(request, state.limiter, "upload")
    job_id = new_job_id()
    async with receiving(state, ip, "upload"):
        saved = await receive_upload(
            request.stream(),
            request.headers.get("content-type"),
            settings.uploads_dir,
            job_id,
            settings.max_upload_bytes,
        )
    try:
        options = check_options(parse_options(saved.fields.get("options")), settings)
        payload = JobPayload(
            job_id=job_id,
            source=JobSource(kind="upload", path=str(saved.path), filename=saved.filename),
            priority=priority,
            options=options,
        )
        raw_callback = saved.fields.get("callback_url")
        callback = await vet_callback_url(raw_callback, settings) if raw_callback else None
        await enqueue(state, payload, request, callback)
    except BaseException:
        saved.path.unlink(missing_ok=True)
        raise
    state.metrics.upload_bytes.inc(saved.size)
    return accepted(job_id, rate_limit_headers(request))
