"""``DELETE /api/job/{id}``: cancel a job (see ``gateway.cancel``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from dfd.schemas import JobView
from dfd.states import JobState
from gateway.audit import record
from gateway.cancel import cancel_job, fetch_job
from gateway.deps import State, rate_limit_headers, rate_limited, require_api_key
from gateway.errors import NotFoundError
from gateway.routes.events import read_job
from gateway.schemas import problem_responses
from gateway.tenants import job_visible

router = APIRouter(tags=["jobs"])


@router.delete(
    "/api/job/{job_id}",
    response_model=JobView,
    summary="Cancel a job",
    description="A waiting job is cancelled at once (`200`, status `cancelled`); an active "
    "one stops at its next stage boundary (`202`, status `active` until then). Its temp "
    "files are removed; a finished job answers `409`.",
    responses={202: {"model": JobView}, **problem_responses(401, 404, 409, 429, 503)},
    dependencies=[Depends(rate_limited(None)), Depends(require_api_key)],
)
async def cancel(job_id: str, request: Request, state: State) -> Response:
    job = await run_in_threadpool(fetch_job, state.redis, job_id)
    if not job_visible(request, job.meta):
        raise NotFoundError(f"job: expected a known job id, got {job_id!r} (unknown or expired)")
    now = await run_in_threadpool(cancel_job, state.redis, job, state.settings)
    await record(state, request, "cancel", job_id=job_id, was=now.value)
    found = await read_job(state, job_id, request)
    if found is None:
        raise NotFoundError(f"job: expected a known job id, got {job_id!r} (unknown or expired)")
    headers = {"Cache-Control": "no-store", **rate_limit_headers(request)}
    return Response(
        found[2],
        status_code=202 if now == JobState.ACTIVE else 200,
        media_type="application/json",
        headers=headers,
    )
