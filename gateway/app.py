"""The gateway application: ``create_app(settings)`` builds one FastAPI app.

Settings are built once (here or by the caller) and passed down. Redis clients are the
app's own unless one is handed in: a synchronous one for rq (enqueueing) and an
asynchronous one, opened in the lifespan on the server's event loop, for the hot paths
(job lookups and rate limits).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.connection import SSLConnection
from redis.exceptions import RedisError

from dfd import __version__, signing
from dfd.errors import ConfigurationError
from dfd.logs import configure_logging
from dfd.settings import Settings, load_settings
from dfd.tracing import setup_tracing
from gateway import audit, errors
from gateway.bodylimit import BodyLimitMiddleware
from gateway.deps import GatewayState
from gateway.evidence_links import resigner
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.queue import JobQueue
from gateway.ratelimit import RateLimiter, parse_networks
from gateway.routes import (
    admin,
    analyze,
    batch,
    cancel,
    events,
    evidence,
    health,
    jobs,
    known_fakes,
    pages,
    upload,
)
from gateway.tenants import load_tenants

log = logging.getLogger(__name__)


def _url_of(client: Redis) -> str:
    """A URL reaching the same server as ``client``: credentials quoted, TLS kept."""
    pool = client.connection_pool
    kw = pool.connection_kwargs
    auth = ""
    if kw.get("username") or kw.get("password"):
        user = urllib.parse.quote(kw.get("username") or "", safe="")
        password = urllib.parse.quote(kw.get("password") or "", safe="")
        auth = f"{user}:{password}@" if kw.get("password") else f"{user}@"
    if kw.get("path"):
        return f"unix://{auth}{urllib.parse.quote(kw['path'])}?db={kw.get('db', 0)}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    host = kw.get("host", "127.0.0.1")
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{auth}{host}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def _timeouts(settings: Settings) -> dict[str, Any]:
    """Bounded Redis calls: a server that accepts but never answers must not stall requests."""
    return {
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
    }


def install_bearer_scheme(app: FastAPI, required: bool) -> None:
    """Declare the bearer key in the OpenAPI schema, on every ``/api`` operation
    (optional, ``{}``, when the gateway runs without keys)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key from DFD_API_KEYS or DFD_TENANTS: "
                "`Authorization: Bearer <key>`.",
            }
            security: list[dict[str, list[str]]] = (
                [{"bearer": []}] if required else [{"bearer": []}, {}]
            )
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/api/"):
                    for operation in operations.values():
                        operation["security"] = security
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> FastAPI:
    """Build the gateway.

    Args:
        settings: The process's settings; built from the environment when omitted.
        redis: A Redis client to use (tests, embedding); else one for ``settings.redis_url``.

    Raises:
        ConfigurationError: no Redis given and ``settings.redis_url`` unset.
    """
    settings = settings or Settings()
    setup_tracing(settings, "dfd-gateway")
    if redis is None:
        if not settings.redis_url:
            raise ConfigurationError(
                "gateway: expected DFD_REDIS_URL (or a Redis client), got neither; "
                "`dfd gateway` and `dfd serve` start a local one"
            )
        redis = Redis.from_url(settings.redis_url, **_timeouts(settings))
        redis_url = settings.redis_url  # as given: TLS options in its query string stay
    else:
        redis_url = _url_of(redis)
    metrics = GatewayMetrics()
    tenant_keys = load_tenants(settings)  # a bad tenants file stops start-up, not a request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        aredis = AsyncRedis.from_url(redis_url, **_timeouts(settings))
        secret = signing.load_secret(settings)
        app.state.gateway = GatewayState(
            settings=settings,
            redis=redis,
            aredis=aredis,
            queue=JobQueue(redis, aredis, settings),
            limiter=RateLimiter(aredis, settings),
            metrics=metrics,
            trusted_proxies=parse_networks(settings.trusted_proxies),
            api_keys=tenant_keys,
            signing_secret=secret,
            resign=resigner(settings, secret),
            admin_keys=tuple(k.get_secret_value().encode() for k in settings.admin_keys),
        )
        try:
            await app.state.gateway.limiter.load()
        except RedisError as exc:
            # Not fatal: /readyz reports Redis down, and a poll reloads the script on NOSCRIPT.
            log.warning("redis unavailable at start-up", extra={"detail": str(exc)})
        try:
            yield
        finally:
            await aredis.aclose()

    app = FastAPI(
        title="dfd",
        version=__version__,
        description="Deepfake detection: upload a video or give a URL, poll the job, read the verdict.",
        lifespan=lifespan,
        # Served by gateway.routes.pages with local assets (FastAPI's own load from a CDN).
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = metrics
    errors.install(app)
    for module in (
        upload,
        analyze,
        jobs,
        events,
        cancel,
        batch,
        audit,
        health,
        evidence,
        admin,
        known_fakes,
    ):
        app.include_router(module.router)
    pages.install(app)
    install_bearer_scheme(app, required=bool(tenant_keys))
    app.add_middleware(
        BodyLimitMiddleware, exempt=("/api/upload",), exempt_multipart=("/api/batch",)
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, timeout_s=settings.request_timeout_s)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``gateway.app:app_from_env``): one Settings per worker process."""
    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)
