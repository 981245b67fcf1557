"""Tenants: which tenant an API key belongs to, and what it may see and ask for.

Tenants come from ``settings.tenants`` and ``settings.tenants_file`` (the same JSON
shape); keys in ``settings.api_keys`` belong to the tenant ``default``. A job records its
tenant in ``job.meta["tenant"]``; a key sees only its own tenant's jobs, batches and
events (another tenant's job is ``404``, as an unknown one), unless its tenant is an
admin. With no keys configured the gateway is open and there are no tenants.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import TypeAdapter, ValidationError

from dfd.errors import ConfigurationError
from dfd.settings import MIN_API_KEY_LENGTH, Settings, TenantSettings
from dfd.states import Priority
from gateway.errors import ForbiddenError
from gateway.ratelimit import Policy, RateLimiter

DEFAULT_TENANT = "default"
_PRIORITY_RANK = {Priority.LOW: 0, Priority.DEFAULT: 1, Priority.HIGH: 2}


@dataclass(frozen=True)
class Tenant:
    name: str
    admin: bool = False
    max_priority: Priority = Priority.HIGH
    uploads_per_hour: int | None = None
    analyze_per_hour: int | None = None

    def allows(self, priority: Priority) -> bool:
        return _PRIORITY_RANK[Priority(priority)] <= _PRIORITY_RANK[self.max_priority]


def load_tenants(settings: Settings) -> tuple[tuple[bytes, Tenant], ...]:
    """Every accepted key with its tenant.

    Raises:
        ConfigurationError: the tenants file is unreadable or not of the documented shape,
            a key is too short, or one key is given to two tenants.
    """
    specs: dict[str, TenantSettings] = dict(settings.tenants)
    if settings.tenants_file is not None:
        path = settings.tenants_file
        try:
            raw: Any = json.loads(path.read_text())
            specs.update(TypeAdapter(dict[str, TenantSettings]).validate_python(raw))
        except (OSError, ValueError, ValidationError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            why = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else str(exc)
            raise ConfigurationError(
                f"DFD_TENANTS_FILE: expected a JSON object of tenants at {path}, got {why}"
            ) from None
    keys: list[tuple[bytes, Tenant]] = [
        (k.get_secret_value().encode(), Tenant(DEFAULT_TENANT)) for k in settings.api_keys
    ]
    for name, spec in specs.items():
        tenant = Tenant(
            name=name,
            admin=spec.admin,
            max_priority=Priority(spec.max_priority),
            uploads_per_hour=spec.uploads_per_hour,
            analyze_per_hour=spec.analyze_per_hour,
        )
        for key in spec.keys:
            value = key.get_secret_value()
            if len(value) < MIN_API_KEY_LENGTH:
                raise ConfigurationError(
                    f"tenants: expected keys of at least {MIN_API_KEY_LENGTH} characters, "
                    f"got a shorter one for tenant {name!r}"
                )
            keys.append((value.encode(), tenant))
    seen: dict[bytes, str] = {}
    for raw, owner in keys:
        if seen.setdefault(raw, owner.name) != owner.name:
            raise ConfigurationError(
                f"tenants: expected each key to belong to one tenant, got one key for both "
                f"{seen[raw]!r} and {owner.name!r}"
            )
    return tuple(keys)


def match_key(given: bytes, keys: tuple[tuple[bytes, Tenant], ...]) -> Tenant | None:
    """The tenant of ``given``, comparing against every key in constant time."""
    found: Tenant | None = None
    for key, tenant in keys:
        if hmac.compare_digest(given, key):
            found = tenant
    return found


def request_tenant(request: Request) -> Tenant | None:
    """The tenant ``require_api_key`` found for this request; ``None`` when auth is off."""
    return getattr(request.state, "tenant", None)


def job_visible(request: Request, meta: dict[str, Any]) -> bool:
    """Whether this request's tenant may see a job with this meta."""
    tenant = request_tenant(request)
    return tenant is None or tenant.admin or meta.get("tenant") == tenant.name


def check_priority(request: Request, priority: Priority) -> None:
    """Raises ``ForbiddenError`` for a priority above what the request's tenant may ask."""
    tenant = request_tenant(request)
    if tenant is not None and not tenant.allows(priority):
        raise ForbiddenError(
            f"priority: expected at most {tenant.max_priority.value} for tenant "
            f"{tenant.name!r}, got {Priority(priority).value}"
        )


async def charge_tenant(
    request: Request, limiter: RateLimiter, endpoint: str, cost: int = 1
) -> None:
    """Count ``cost`` submissions against the tenant's hourly quota for ``endpoint``.

    Raises:
        RateLimitedError: the tenant's quota is used up (nothing is counted then).
    """
    tenant = request_tenant(request)
    if tenant is None:
        return
    limit = tenant.uploads_per_hour if endpoint == "upload" else tenant.analyze_per_hour
    if limit is None:
        return
    await limiter.hit(
        f"tenant {tenant.name!r}",
        [Policy(f"{endpoint}-tenant", limit)],
        cost,
        client=f"tenant:{tenant.name}",
    )


def tenant_name(request: Request) -> str | None:
    tenant = request_tenant(request)
    return tenant.name if tenant is not None else None
