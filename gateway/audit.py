"""The gateway's side of the audit log (:mod:`dfd.audit`): entries for what clients do,
and ``GET /api/audit`` for admin tenants."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from dfd import audit
from dfd.errors import UpstreamUnavailableError
from gateway.deps import GatewayState, State, get_client_ip, rate_limited, require_api_key
from gateway.errors import ForbiddenError
from gateway.schemas import problem_responses
from gateway.tenants import request_tenant, tenant_name

log = logging.getLogger(__name__)
router = APIRouter(tags=["admin"])


async def record(state: GatewayState, request: Request, action: str, **fields: Any) -> None:
    """Append an entry naming the tenant and the client; a Redis failure is logged, not
    raised (what it records has already happened)."""
    try:
        await audit.append(
            state.aredis,
            action,
            tenant=tenant_name(request),
            ip=get_client_ip(request, state),
            **fields,
        )
    except RedisError as exc:
        log.warning("audit: could not record %s", action, extra={"detail": str(exc), **fields})


def _decode(value: bytes) -> Any:
    text = value.decode()
    try:
        return json.loads(text) if text[:1] in "{[0123456789-tfn" else text
    except ValueError:
        return text


@router.get(
    "/api/audit",
    summary="The audit log, newest first (admin tenants)",
    responses=problem_responses(401, 403, 429, 503),
    dependencies=[Depends(rate_limited(None)), Depends(require_api_key)],
)
async def read_audit(
    request: Request, state: State, count: int = Query(100, ge=1, le=1000)
) -> JSONResponse:
    tenant = request_tenant(request)
    if tenant is not None and not tenant.admin:
        raise ForbiddenError(f"audit: expected an admin tenant's key, got tenant {tenant.name!r}'s")
    try:
        entries: list[Any] = await state.aredis.xrevrange(audit.AUDIT_KEY, count=count) or []
    except RedisError as exc:
        raise UpstreamUnavailableError(f"audit: expected Redis to answer, got {exc}") from exc
    return JSONResponse(
        {
            "entries": [
                {"id": eid.decode(), **{k.decode(): _decode(v) for k, v in fields.items()}}
                for eid, fields in entries
            ]
        },
        headers={"Cache-Control": "no-store"},
    )
