"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from gateway.deps import State
from gateway.metrics import CONTENT_TYPE_LATEST
from gateway.schemas import Health

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


async def _triton_reachable(url: str, timeout_s: float) -> bool:
    # Triton opens its gRPC port only after loading the models it starts with, so an
    # accepted connection means ready enough; the gateway stays free of tritonclient.
    host, _, port = url.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port)), timeout_s
        )
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    return True


@router.get(
    "/readyz",
    response_model=Health,
    summary="Redis (and Triton, when configured) reachable",
    responses={503: {"model": Health, "description": "A dependency is unreachable"}},
)
async def readyz(state: State) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(state.aredis.ping(), timeout=2.0)
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    url = state.settings.triton_url
    if url:
        ok = await _triton_reachable(url, 2.0)
        checks["triton"] = "ok" if ok else "unavailable"
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics of this process", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
