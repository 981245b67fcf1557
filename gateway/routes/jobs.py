"""``GET /api/job/{id}``: state, attempt, stage and progress, result or error.

The hot path of the API (clients poll it): the rate limiter and the job lookup share
one pipelined Redis round trip, and the body is built from what is stored without
re-validating the result document.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from redis.exceptions import NoScriptError, RedisError

from dfd.errors import UpstreamUnavailableError
from dfd.schemas import JobView
from gateway.deps import GatewayState, get_client_ip, require_api_key
from gateway.errors import NotFoundError
from gateway.queue import view_json
from gateway.ratelimit import Decision
from gateway.schemas import problem_responses
from gateway.tenants import job_visible

router = APIRouter(tags=["jobs"])


async def _lookup(
    state: GatewayState, ip: str, job_id: str
) -> tuple[Decision | None, list[Any] | None]:
    """One round trip: count the request against the global limit and read the job."""
    policies = state.limiter.policies_for(None)
    async with state.aredis.pipeline(transaction=False) as pipe:
        if policies:
            state.limiter.add_hit(pipe, ip, policies)
        found = state.queue.add_view(pipe, job_id)
        replies = await pipe.execute()
    decision = state.limiter.decide(replies.pop(0), ip, policies) if policies else None
    return decision, replies if found else None


@router.get(
    "/api/job/{job_id}",
    response_model=JobView,
    summary="A job's state, progress and result",
    responses=problem_responses(401, 404, 429, 503),
)
async def get_job(job_id: str, request: Request) -> Response:
    """Waiting (with its attempt), active (stage, progress), completed (the result) or failed (the error)."""
    # Auth and the client address are resolved by hand rather than as dependencies:
    # clients poll this route, and each dependency costs more than the work it does.
    state: GatewayState = request.app.state.gateway
    ip = get_client_ip(request, state)
    try:
        try:
            decision, replies = await _lookup(state, ip, job_id)
        except NoScriptError:
            await state.limiter.load()  # Redis restarted and lost its script cache
            decision, replies = await _lookup(state, ip, job_id)
    except RedisError as exc:
        raise UpstreamUnavailableError(
            f"queue: expected Redis to answer for job {job_id}, got {exc}"
        ) from exc
    # After the limit was counted: a wrong key costs quota too, so keys cannot be
    # guessed at polling speed without limit.
    require_api_key(request, state)
    body = (
        view_json(
            job_id,
            replies[0],
            replies[1],
            lambda meta: job_visible(request, meta),
            state.resign,
        )
        if replies is not None
        else None
    )
    if body is None:
        raise NotFoundError(f"job: expected a known job id, got {job_id!r} (unknown or expired)")
    headers = {"Cache-Control": "no-store", **(decision.headers() if decision else {})}
    return Response(body, media_type="application/json", headers=headers)
