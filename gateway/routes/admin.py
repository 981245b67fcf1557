"""``/api/admin/...``: the operator console's JSON API, behind ``settings.admin_keys``.

Read from Redis with rq's API (``gateway.admin``); plain ``def`` routes, so FastAPI runs
rq's synchronous calls in its thread pool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from redis.exceptions import RedisError

from dfd.errors import UpstreamUnavailableError
from dfd.states import JobState, Label
from gateway.admin import Console
from gateway.deps import State, require_admin_key
from gateway.schemas import AdminJob, AdminJobs, AdminOverview, problem_responses

router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin_key)],
    responses=problem_responses(401, 403, 503),
)


def _console(state: State) -> Console:
    return Console(state.redis, state.settings.uploads_dir)


AdminConsole = Annotated[Console, Depends(_console)]


def _unavailable(exc: RedisError) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(f"admin: expected Redis to answer, got {exc}")


@router.get("/overview", response_model=AdminOverview, summary="Queues, workers, last hour")
def overview(console: AdminConsole) -> AdminOverview:
    """Queue depth per priority, every worker and its job, throughput and latency over the last hour."""
    try:
        return console.overview()
    except RedisError as exc:
        raise _unavailable(exc) from exc


@router.get("/jobs", response_model=AdminJobs, summary="Recent jobs, filtered")
def jobs(
    console: AdminConsole,
    status: JobState | None = None,
    label: Label | None = None,
    since_s: Annotated[
        int | None, Query(gt=0, description="Only jobs created in the last since_s seconds.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AdminJobs:
    """Newest first: waiting, active, completed, failed and cancelled jobs of every queue."""
    since = datetime.now(UTC) - timedelta(seconds=since_s) if since_s else None
    try:
        return console.jobs(status, label.value if label else None, since, limit)
    except RedisError as exc:
        raise _unavailable(exc) from exc


@router.post(
    "/job/{job_id}/retry",
    response_model=AdminJob,
    summary="Retry a failed or cancelled job",
    responses=problem_responses(404, 409),
)
def retry(job_id: str, console: AdminConsole) -> AdminJob:
    try:
        return console.retry(job_id)
    except RedisError as exc:
        raise _unavailable(exc) from exc


@router.post(
    "/job/{job_id}/cancel",
    response_model=AdminJob,
    summary="Cancel a waiting job",
    responses=problem_responses(404, 409),
)
def cancel(job_id: str, console: AdminConsole) -> AdminJob:
    try:
        return console.cancel(job_id)
    except RedisError as exc:
        raise _unavailable(exc) from exc
