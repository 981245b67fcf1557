"""Per-IP rate limits and the concurrent-upload cap, kept in Redis.

Limits are fixed windows that start at a client's first request: one counter per
(policy, client: an IPv4 address or an IPv6 /64) with the window as its TTL. One Lua script checks every policy that
applies to a request and, only if none is used up, increments them all, so a burst of
concurrent requests is admitted exactly up to the limit, and a refused request costs no
quota. The counters live in Redis, so they survive a gateway restart and are shared by
every gateway replica.

Which address is the client's is decided by :func:`client_ip`: the socket peer, unless the
peer is a trusted proxy and a client-IP header is configured.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from dfd.errors import UpstreamUnavailableError
from dfd.settings import Settings
from gateway.errors import RateLimitedError, TooManyUploadsError

KEY_PREFIX = "dfd:rl:"

# KEYS: one counter per policy; ARGV: window_s, cost (1, or a batch's item count), then
# one limit per key. Returns {allowed, index of the deciding policy (1-based), limit,
# remaining, reset_s}.
_HIT = """
local window = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 2])
  local used = tonumber(redis.call('GET', key) or '0')
  if used + cost > limit then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then ttl = window end
    return {0, i, limit, 0, ttl}
  end
end
local best_i, best_limit, best_remaining, best_reset = 0, 0, -1, 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 2])
  local used = redis.call('INCRBY', key, cost)
  local ttl = redis.call('TTL', key)
  if ttl < 0 then
    redis.call('EXPIRE', key, window)
    ttl = window
  end
  local remaining = limit - used
  if best_remaining < 0 or remaining < best_remaining then
    best_i, best_limit, best_remaining, best_reset = i, limit, remaining, ttl
  end
end
return {1, best_i, best_limit, best_remaining, best_reset}
"""

# KEYS[1]: a sorted set of the client's slots, scored by when each was taken (Redis's
# clock, so gateways with skewed clocks agree); ARGV: max, slot TTL (s), slot token.
# Each slot expires on its own: a slot leaked by a gateway that died mid-upload frees
# itself after the TTL, however often the client asks meanwhile. Returns the number of
# slots now taken, or -1 if all are.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return -1
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
"""

_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then redis.call('DEL', KEYS[1]) end
return n
"""


@dataclass(frozen=True)
class Policy:
    """A limit of ``limit`` requests per ``window_s`` for one scope (``global``, ``upload``...)."""

    scope: str
    limit: int
    window_s: int = 3600


@dataclass(frozen=True)
class UploadSlot:
    """One upload in flight: the client's slot set and this upload's member of it."""

    key: str
    token: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    scope: str
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers (draft-ietf-httpapi-ratelimit-headers), plus ``Retry-After`` on refusal."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(self.remaining, 0)),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(self.reset_s, 1))
        return headers


class RateLimiter:
    """The Lua-backed limiter; one per app, sharing the app's async Redis client."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._hit = redis.register_script(_HIT)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self.global_policy = Policy("global", settings.rate_limit_per_hour)
        self.endpoint_policies = {
            "upload": Policy("upload", settings.rate_limit_uploads_per_hour),
            "analyze": Policy("analyze", settings.rate_limit_analyze_per_hour),
        }
        self.max_uploads_in_flight = settings.max_concurrent_uploads_per_ip
        # An upload slot outlives a crashed gateway by at most this long.
        self.inflight_ttl_s = int(settings.request_timeout_s) * 2 + 60

    def policies_for(self, endpoint: str | None) -> list[Policy]:
        """The global policy plus the endpoint's own; a limit of 0 means unlimited."""
        policies = [self.global_policy]
        if endpoint in self.endpoint_policies:
            policies.append(self.endpoint_policies[endpoint])
        return [p for p in policies if p.limit > 0]

    def _keys_args(
        self, ip: str, policies: Sequence[Policy], cost: int = 1, client: str | None = None
    ) -> tuple[list[str], list[int]]:
        # All policies of one request share the window length; per-policy windows would
        # need one script call per window.
        client = client or limit_key(ip)
        keys = [f"{KEY_PREFIX}{p.scope}:{client}" for p in policies]
        return keys, [policies[0].window_s, cost, *(p.limit for p in policies)]

    def add_hit(self, pipe: Any, ip: str, policies: Sequence[Policy]) -> None:
        """Queue the limiter on ``pipe`` (by SHA: the script is loaded at start-up and
        re-loaded on ``NOSCRIPT``), so a status poll costs one round trip in all."""
        keys, args = self._keys_args(ip, policies)
        pipe.evalsha(self._hit.sha, len(keys), *keys, *args)

    async def load(self) -> None:
        """Load the limiter script (again, after a Redis restart emptied its script cache)."""
        await self._redis.script_load(_HIT)

    def decide(self, reply: Sequence[int], ip: str, policies: Sequence[Policy]) -> Decision:
        """Turn the script's reply into a decision.

        Raises:
            RateLimitedError: when one of the policies is used up (nothing is counted then).
        """
        allowed, index, limit, remaining, reset = (int(x) for x in reply)
        decision = Decision(bool(allowed), policies[index - 1].scope, limit, remaining, reset)
        if not decision.allowed:
            raise RateLimitedError(
                f"rate limit: expected at most {decision.limit} {decision.scope} requests per "
                f"{policies[0].window_s} s from {ip}, got more; retry in {decision.reset_s} s",
                headers=decision.headers(),
            )
        return decision

    async def hit(
        self, ip: str, policies: Sequence[Policy], cost: int = 1, client: str | None = None
    ) -> Decision | None:
        """Count ``cost`` requests (a batch counts each item) from ``ip`` against
        ``policies``; ``None`` when none applies. ``client`` names another counter than
        the IP's (a tenant's quota: ``tenant:<name>``).

        Raises:
            RateLimitedError: when one of the policies is used up (nothing is counted then).
        """
        if not policies:
            return None
        keys, args = self._keys_args(ip, policies, cost, client)
        with _redis_errors("rate limit"):
            reply = await self._hit(keys=keys, args=args)
        return self.decide(reply, ip, policies)

    async def acquire_upload_slot(self, ip: str) -> UploadSlot:
        """Take one of ``ip``'s concurrent upload slots; returns it, to release.

        Raises:
            TooManyUploadsError: when all of its slots are taken.
        """
        # A new key name: the counter string older gateways kept would be the wrong type.
        slot = UploadSlot(f"{KEY_PREFIX}uploads:{limit_key(ip)}", secrets.token_hex(8))
        with _redis_errors("upload slots"):
            n = await self._acquire(
                keys=[slot.key], args=[self.max_uploads_in_flight, self.inflight_ttl_s, slot.token]
            )
        if int(n) < 0:
            raise TooManyUploadsError(
                f"upload: expected at most {self.max_uploads_in_flight} uploads in flight from {ip}, "
                "got one more",
                headers={"Retry-After": "5"},
            )
        return slot

    async def release_upload_slot(self, slot: UploadSlot) -> None:
        with _redis_errors("upload slots"):
            await self._release(keys=[slot.key], args=[slot.token])


@contextmanager
def _redis_errors(what: str) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise UpstreamUnavailableError(f"{what}: expected Redis to answer, got {exc}") from exc


def limit_key(ip: str) -> str:
    """Who a limit counts: an IPv4 address, or the /64 an IPv6 address is in.

    One IPv6 subscriber is handed a whole /64, so counting addresses apart would give
    one client 2**64 quotas. An IPv4 client seen through a dual-stack socket
    (``::ffff:a.b.c.d``) is counted as its IPv4 address, not lumped into one /64 with
    every other IPv4 client.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def parse_networks(
    entries: Sequence[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Trusted proxies as networks (a bare address is a /32 or /128)."""
    return tuple(
        ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()
    )


def _in(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    # An IPv4 proxy seen through a dual-stack socket (``--host ::``) is ``::ffff:a.b.c.d``:
    # it is the same proxy as ``a.b.c.d`` in DFD_TRUSTED_PROXIES.
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return any(ip in net or (mapped is not None and mapped in net) for net in networks)


def client_ip(
    peer: str | None,
    header_value: str | None,
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """The client's address.

    The configured header is believed only when the socket peer is a trusted proxy. In
    an ``X-Forwarded-For`` style list each proxy appends the address it saw, so the
    client is the right-most entry that is not itself a trusted proxy; entries further
    left were written by the client and could be anything.
    """
    peer = peer or "unknown"
    if not header_value or not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in header_value.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            # A malformed entry: stop believing the chain here.
            return peer
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer
