"""``GET /evidence/{key}``: evidence from the local store, behind signed, expiring URLs."""

from __future__ import annotations

import mimetypes
import time

from fastapi import APIRouter
from fastapi.responses import FileResponse

from dfd import signing
from gateway.deps import State
from gateway.errors import ForbiddenError, NotFoundError
from gateway.schemas import problem_responses

router = APIRouter(tags=["evidence"])


@router.get(
    "/evidence/{key:path}",
    summary="A thumbnail, heatmap or chart from a job's evidence",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}, "image/jpeg": {}}},
        **problem_responses(403, 404),
    },
)
async def evidence(key: str, state: State, exp: str = "", sig: str = "") -> FileResponse:
    shown = key
    key = signing.private_key(shown, state.signing_secret)  # the job id is masked in links
    if not signing.is_valid_key(key):
        raise NotFoundError(f"evidence: expected a key the store handed out, got {shown!r}")
    if not signing.verify(key, exp, sig, state.signing_secret):
        raise ForbiddenError(
            "evidence: expected a valid, unexpired signature, got a bad or expired one"
        )
    path = signing.evidence_path(state.settings, key)
    if not path.is_file():
        raise NotFoundError(f"evidence: {shown!r} no longer exists")
    max_age = max(int(exp) - int(time.time()), 0)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(
        path,
        media_type=media_type,
        headers={
            "Cache-Control": f"private, max-age={max_age}",
            "X-Content-Type-Options": "nosniff",
        },
    )
