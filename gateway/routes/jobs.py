"""``GET /api/job/{id}``: state, attempt, stage and progress, result or error."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from redis.exceptions import RedisError

from dfd.errors import UpstreamUnavailableError
from dfd.schemas import JobView
from gateway.deps import State, rate_limit_headers, rate_limited, require_api_key
from gateway.errors import NotFoundError
from gateway.schemas import problem_responses

router = APIRouter(tags=["jobs"])


@router.get(
    "/api/job/{job_id}",
    response_model=JobView,
    summary="A job's state, progress and result",
    responses=problem_responses(401, 404, 429, 503),
    dependencies=[Depends(require_api_key), Depends(rate_limited(None))],
)
async def get_job(job_id: str, request: Request, state: State) -> Response:
    try:
        view = await state.queue.view(job_id)
    except RedisError as exc:
        raise UpstreamUnavailableError(
            f"queue: expected Redis to answer for job {job_id}, got {exc}"
        ) from exc
    if view is None:
        raise NotFoundError(f"job: expected a known job id, got {job_id!r} (unknown or expired)")
    # Serialised once by pydantic-core; FastAPI would validate and serialise it again.
    return Response(
        view.model_dump_json(exclude_none=True),
        media_type="application/json",
        headers={"Cache-Control": "no-store", **rate_limit_headers(request)},
    )
