"""FastAPI dependencies: the per-app state, the client's address, auth and rate limits."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from dfd.settings import Settings
from gateway.errors import ForbiddenError, UnauthorizedError
from gateway.metrics import GatewayMetrics
from gateway.queue import JobQueue
from gateway.ratelimit import Decision, RateLimiter, client_ip
from gateway.tenants import Tenant, match_key


@dataclass
class GatewayState:
    """Everything a request handler needs, built once per app in ``create_app``."""

    settings: Settings
    redis: Redis
    aredis: AsyncRedis
    queue: JobQueue
    limiter: RateLimiter
    metrics: GatewayMetrics
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    api_keys: tuple[tuple[bytes, Tenant], ...]
    signing_secret: bytes
    resign: Callable[[bytes], bytes]  # evidence links signed at read (gateway.evidence_links)
    admin_keys: tuple[bytes, ...] = ()


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway  # type: ignore[no-any-return]


State = Annotated[GatewayState, Depends(get_state)]


def get_client_ip(request: Request, state: State) -> str:
    header = state.settings.client_ip_header
    # A proxy may add its own header line rather than extend the client's: read every
    # line, in order, as one list (RFC 9110 5.3), or the client's first line would win.
    value = ", ".join(request.headers.getlist(header)) if header else None
    return client_ip(request.client.host if request.client else None, value, state.trusted_proxies)


ClientIP = Annotated[str, Depends(get_client_ip)]


def _bearer_matches(request: Request, keys: tuple[bytes, ...], what: str) -> None:
    """Raises UnauthorizedError unless the request's bearer token is one of ``keys``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="dfd"'}
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError(
            f"auth: expected an Authorization: Bearer <{what}> header, got none", challenge
        )
    given = token.strip().encode()
    # Compare against every key in constant time, so timing says nothing about which matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key)
    if not matched:
        raise UnauthorizedError(f"auth: expected a known {what}, got an unknown one", challenge)


def require_api_key(request: Request, state: State) -> Tenant | None:
    """Bearer auth when keys are configured (``api_keys``, ``tenants``); open otherwise.

    The key's tenant is kept on ``request.state.tenant`` (see ``gateway.tenants``).

    Raises:
        UnauthorizedError: no ``Authorization: Bearer`` header, or an unknown key.
    """
    if not state.api_keys:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="dfd"'}
    if not header:
        raise UnauthorizedError(
            "auth: expected an Authorization: Bearer <key> header, got none", challenge
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError(
            "auth: expected the Authorization header as 'Bearer <key>', got it without the "
            "'Bearer ' scheme",
            challenge,
        )
    tenant = match_key(token.strip().encode(), state.api_keys)
    if tenant is None:
        raise UnauthorizedError("auth: expected a known API key, got an unknown one", challenge)
    request.state.tenant = tenant
    return tenant


def require_admin_key(request: Request, state: State) -> None:
    """Bearer auth with one of ``settings.admin_keys``; the console is off without any.

    Raises:
        ForbiddenError: no admin key is configured.
        UnauthorizedError: no ``Authorization: Bearer`` header, or an unknown key.
    """
    if not state.admin_keys:
        raise ForbiddenError(
            "admin: the console is off; set DFD_ADMIN_KEYS to a JSON list of keys to turn it on"
        )
    _bearer_matches(request, state.admin_keys, "admin key")


def rate_limited(
    endpoint: str | None,
) -> Callable[[Request, GatewayState, str], Awaitable[Decision | None]]:
    """A dependency counting the request against the global and ``endpoint``'s limits.

    The decision is kept on ``request.state.rate_limit`` so the route can add the
    ``RateLimit-*`` headers to its response.
    """

    async def dependency(request: Request, state: State, ip: ClientIP) -> Decision | None:
        decision = await state.limiter.hit(ip, state.limiter.policies_for(endpoint))
        request.state.rate_limit = decision
        return decision

    return dependency


def rate_limit_headers(request: Request) -> dict[str, str]:
    decision: Decision | None = getattr(request.state, "rate_limit", None)
    return decision.headers() if decision is not None else {}
