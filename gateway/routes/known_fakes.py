"""``/api/known-fakes``: the bank of known fakes, for admins (``DFD_ADMIN_KEYS``).

``POST`` adds an analysed job's perceptual hashes (kept by the worker for as long as the
job's result) under a label and a note; ``GET`` lists the entries; ``DELETE
/api/known-fakes/{id}`` removes one. Every later analysis whose hashes match an entry
is labelled ``manipulated`` with the reason "matches known fake <label>".

The gateway only moves the hashes between Redis keys (``dfd.known_fakes``); hashing is
the worker's. With no admin key configured every request is refused (403): an open
bank would let anyone mark any video fake.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from dfd.errors import UpstreamUnavailableError
from dfd.jobid import JOB_ID_PATTERN
from dfd.known_fakes import BANK_KEY, ENTRY_ID_PATTERN, KnownFake, MediaHashes, job_hashes_key
from gateway.deps import State, rate_limit_headers, rate_limited, require_admin_key
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.schemas import problem_responses

router = APIRouter(tags=["known fakes"])


class KnownFakeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jobId: str = Field(pattern=f"^{JOB_ID_PATTERN}$", description="A finished analysis.")
    label: str = Field(min_length=1, max_length=200, description="What the fake is.")
    note: str | None = Field(None, max_length=2000)


class KnownFakeView(BaseModel):
    id: str
    label: str
    note: str | None
    jobId: str | None
    createdAt: str
    frames: int = Field(description="How many frame hashes the entry holds.")


def _view(entry: KnownFake) -> KnownFakeView:
    return KnownFakeView(
        id=entry.id,
        label=entry.label,
        note=entry.note,
        jobId=entry.job_id,
        createdAt=entry.created_at,
        frames=len(entry.hashes.frames),
    )


_ADMIN = [Depends(rate_limited(None)), Depends(require_admin_key)]


def _redis_error(exc: RedisError) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(f"known fakes: expected Redis to answer, got {exc}")


@router.post(
    "/api/known-fakes",
    status_code=201,
    response_model=KnownFakeView,
    summary="Add an analysed video to the bank of known fakes",
    dependencies=_ADMIN,
    responses=problem_responses(400, 401, 403, 404, 429, 503),
)
async def add_known_fake(body: KnownFakeRequest, request: Request, state: State) -> Response:
    """The job's frame hashes become a bank entry; later re-uploads of the video match it."""
    try:
        raw = await state.aredis.get(job_hashes_key(body.jobId))
    except RedisError as exc:
        raise _redis_error(exc) from exc
    if raw is None:
        raise NotFoundError(
            f"known fakes: expected the hashes of a finished job, got none for {body.jobId!r} "
            "(unknown, unfinished, failed or expired)"
        )
    try:
        hashes = MediaHashes.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidRequestError(
            f"known fakes: job {body.jobId!r}'s stored hashes do not parse ({exc.error_count()} errors)"
        ) from exc
    if not hashes.frames:
        raise InvalidRequestError(
            f"known fakes: expected job {body.jobId!r} to have hashed frames, got none "
            "(every sampled frame was too flat to hash)"
        )
    entry = KnownFake(
        id=secrets.token_hex(8),
        label=body.label,
        note=body.note,
        job_id=body.jobId,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        hashes=hashes,
    )
    try:
        await state.aredis.hset(BANK_KEY, entry.id, entry.model_dump_json())
    except RedisError as exc:
        raise _redis_error(exc) from exc
    return JSONResponse(
        _view(entry).model_dump(),
        status_code=201,
        headers={"Location": f"/api/known-fakes/{entry.id}", **rate_limit_headers(request)},
    )


@router.get(
    "/api/known-fakes",
    response_model=list[KnownFakeView],
    summary="The bank of known fakes",
    dependencies=_ADMIN,
    responses=problem_responses(401, 403, 429, 503),
)
async def list_known_fakes(request: Request, state: State) -> Response:
    """Every entry, newest first (without the hashes; `dfd hashes export` has those)."""
    try:
        raw = await state.aredis.hgetall(BANK_KEY)
    except RedisError as exc:
        raise _redis_error(exc) from exc
    entries = [KnownFake.model_validate_json(v) for v in raw.values()]
    entries.sort(key=lambda e: e.created_at, reverse=True)
    return JSONResponse(
        [_view(e).model_dump() for e in entries], headers=rate_limit_headers(request)
    )


@router.delete(
    "/api/known-fakes/{entry_id}",
    status_code=204,
    summary="Remove an entry from the bank of known fakes",
    dependencies=_ADMIN,
    responses=problem_responses(401, 403, 404, 429, 503),
)
async def delete_known_fake(entry_id: str, request: Request, state: State) -> Response:
    removed = 0
    if re.fullmatch(ENTRY_ID_PATTERN, entry_id):
        try:
            removed = await state.aredis.hdel(BANK_KEY, entry_id)
        except RedisError as exc:
            raise _redis_error(exc) from exc
    if not removed:
        raise NotFoundError(f"known fakes: expected a known entry id, got {entry_id!r}")
    return Response(status_code=204, headers=rate_limit_headers(request))
