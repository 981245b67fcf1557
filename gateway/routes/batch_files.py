"""``POST /api/batch`` with a multipart body: several ``file`` parts, one job each.

Held to what single uploads are: the upload rate limit and the tenant's upload quota
count each file (one before the body is read, so a client already over its limit sends
nothing, the rest once the files are known), one upload slot per request, and each
file to ``max_upload_bytes`` and a video or audio container. A file refused on its own
(too large, not a container, empty) is listed in the answer's ``refused`` with the
problem it would have got alone, and in the batch's record; the others become jobs.
Nothing is lost: each file part is either a job or a refusal, and a request refused as a
whole (malformed, too many files or bytes, a limit, a bad ``options`` or
``callback_url``, Redis down, every file refused) leaves no file behind and no job.
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from dfd.errors import DfdError, UpstreamUnavailableError
from dfd.jobid import new_job_id
from dfd.schemas import JobOptions, JobSource
from dfd.states import JobState, Priority
from gateway.audit import record
from gateway.batch_uploads import BatchUpload, RefusedFile, receive_batch
from gateway.batches import submit_batch
from gateway.deps import GatewayState, get_client_ip, require_api_key
from gateway.errors import problem_type, status_for
from gateway.routes.accepted import job_meta
from gateway.routes.analyze import check_options, vet_callback_url
from gateway.routes.upload import parse_options, receiving, refuse_declared_size
from gateway.tenants import charge_tenant, check_priority, tenant_name
from gateway.uploads import BODY_OVERHEAD_BYTES


def _refusal(item: RefusedFile) -> dict[str, object]:
    return {
        "index": item.index,
        "filename": item.filename,
        "type": problem_type(item.error.type),
        "status": status_for(item.error),
        "detail": str(item.error),
    }


def _all_refused(upload: BatchUpload) -> DfdError:
    """The request's error when no file was accepted: the first file's, naming them all."""
    first = upload.refused[0].error
    details = "; ".join(f"files[{r.index}]: {r.error}" for r in upload.refused)
    return type(first)(f"batch: expected at least one acceptable file, got none ({details})")


async def _receive(request: Request, state: GatewayState, ip: str) -> BatchUpload:
    settings = state.settings
    async with receiving(state, ip, "batch"):
        return await receive_batch(
            request.stream(),
            request.headers.get("content-type"),
            settings.uploads_dir,
            new_job_id,
            max_file_bytes=settings.max_upload_bytes,
            max_total_bytes=settings.max_batch_upload_bytes,
            max_files=settings.max_batch_items,
        )


async def create_file_batch(
    request: Request, state: GatewayState, priority: Priority
) -> JSONResponse:
    settings = state.settings
    refuse_declared_size(
        request,
        settings.max_batch_upload_bytes + BODY_OVERHEAD_BYTES,
        f"batch: expected files of at most {settings.max_batch_upload_bytes} bytes in all, "
        "got a body of ",
    )
    # One file's worth of limits before the body: a wrong key costs quota too.
    ip = get_client_ip(request, state)
    policies = state.limiter.policies_for("upload")
    decision = await state.limiter.hit(ip, policies)
    require_api_key(request, state)
    check_priority(request, priority)
    await charge_tenant(request, state.limiter, "upload")
    upload = await _receive(request, state, ip)
    try:
        if not upload.saved:
            raise _all_refused(upload)
        more = len(upload.saved) - 1  # the rest of the accepted files
        if more:
            decision = await state.limiter.hit(ip, policies, cost=more) or decision
            await charge_tenant(request, state.limiter, "upload", cost=more)
        options = check_options(parse_options(upload.fields.get("options")), settings)
        raw_callback = upload.fields.get("callback_url")
        callback = await vet_callback_url(raw_callback, settings) if raw_callback else None
        batch_id = new_job_id()
        jobs = [
            (
                saved.path.name.split(".", 1)[0],
                JobSource(kind="upload", path=str(saved.path), filename=saved.filename),
            )
            for _, saved in upload.saved
        ]
        refused = [_refusal(r) for r in upload.refused]
        try:
            ids = await _submit(
                state, request, batch_id, jobs, priority, callback, options, refused
            )
        except RedisError as exc:
            raise UpstreamUnavailableError(
                f"queue: expected Redis to accept batch {batch_id}, got {exc}"
            ) from exc
    except BaseException:
        upload.remove_all()
        raise
    count = len(ids)
    state.metrics.upload_bytes.inc(sum(saved.size for _, saved in upload.saved))
    state.metrics.enqueued.labels("upload", priority.value).inc(count)
    state.metrics.tenant_jobs.labels(tenant_name(request) or "none", "upload").inc(count)
    await record(
        state,
        request,
        "batch",
        batch_id=batch_id,
        jobs=ids,
        callback_url=callback,
        refused=len(refused),
    )
    return JSONResponse(
        {
            "batchId": batch_id,
            "jobs": [
                {
                    "jobId": job_id,
                    "status": JobState.WAITING.value,
                    "index": index,
                    "filename": saved.filename,
                }
                for job_id, (index, saved) in zip(ids, upload.saved, strict=True)
            ],
            "refused": refused,
        },
        status_code=202,
        headers={"Location": f"/api/batch/{batch_id}", **(decision.headers() if decision else {})},
    )


async def _submit(
    state: GatewayState,
    request: Request,
    batch_id: str,
    jobs: list[tuple[str, JobSource]],
    priority: Priority,
    callback: str | None,
    options: JobOptions | None,
    refused: list[dict[str, object]],
) -> list[str]:
    """Enqueue off the event loop; seen through even if the request is cancelled meanwhile
    (as ``gateway.routes.accepted.enqueue``: the jobs land in Redis anyway)."""
    work = asyncio.ensure_future(
        run_in_threadpool(
            submit_batch,
            state,
            batch_id,
            jobs,
            priority,
            job_meta(request),
            callback,
            options,
            {"refused": refused} if refused else None,
        )
    )
    while not work.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(work)
    return work.result()
