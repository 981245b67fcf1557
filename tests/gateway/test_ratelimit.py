"""Rate limits: exact under concurrency, with headers, per client, surviving restarts."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.asyncio import Redis as AsyncRedis

from dfd.settings import Settings
from gateway.errors import RateLimitedError
from gateway.ratelimit import Policy, RateLimiter, client_ip, parse_networks

PUBLIC = "http://93.184.216.34/clip.mp4"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        ("10.0.0.5", "1.2.3.4", [], "10.0.0.5"),  # no trusted proxies: header ignored
        ("10.0.0.5", "1.2.3.4", ["10.0.0.0/8"], "1.2.3.4"),
        ("192.0.2.9", "1.2.3.4", ["10.0.0.0/8"], "192.0.2.9"),  # peer not trusted
        (
            "10.0.0.5",
            "6.6.6.6, 1.2.3.4",
            ["10.0.0.0/8"],
            "1.2.3.4",
        ),  # client-written entries ignored
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", ["10.0.0.0/8"], "1.2.3.4"),  # proxy chain
        ("10.0.0.5", "garbage", ["10.0.0.0/8"], "10.0.0.5"),
        ("10.0.0.5", None, ["10.0.0.0/8"], "10.0.0.5"),
        ("::1", "2001:db8::1", ["::1"], "2001:db8::1"),
        # an IPv4 proxy seen through a dual-stack socket (`--host ::`)
        ("::ffff:10.0.0.5", "1.2.3.4", ["10.0.0.0/8"], "1.2.3.4"),
        ("10.0.0.5", "1.2.3.4, ::ffff:10.0.0.7", ["10.0.0.0/8"], "1.2.3.4"),
    ],
)
def test_client_ip(peer, header, trusted, expected) -> None:
    assert client_ip(peer, header, parse_networks(trusted)) == expected


@pytest.mark.integration
def test_lua_limiter_is_exact_under_concurrency(redis_url, redis) -> None:
    """400 concurrent hits over 16 connections against a limit of 137: exactly 137 pass."""

    async def burst() -> tuple[int, int]:
        clients = [AsyncRedis.from_url(redis_url) for _ in range(16)]
        limiters = [RateLimiter(c, Settings()) for c in clients]
        policies = [Policy("global", 1000), Policy("analyze", 137)]

        async def one(i: int) -> bool:
            try:
                await limiters[i % len(limiters)].hit("203.0.113.7", policies)
                return True
            except RateLimitedError:
                return False

        outcomes = await asyncio.gather(*(one(i) for i in range(400)))
        for c in clients:
            await c.aclose()
        return sum(outcomes), len(outcomes) - sum(outcomes)

    allowed, refused = asyncio.run(burst())
    assert (allowed, refused) == (137, 263)
    # Refused requests cost no quota: the global counter saw only the admitted ones.
    assert int(redis.get("dfd:rl:global:203.0.113.7")) == 137
    assert 0 < redis.ttl("dfd:rl:analyze:203.0.113.7") <= 3600


@pytest.mark.integration
@pytest.mark.slow
def test_http_burst_admits_exactly_the_limit(gateway_server, redis) -> None:
    """A real server (2 processes), 40 concurrent analyses, limit 10: 10 accepted, 30 refused, 10 jobs."""
    limit = 10
    server = gateway_server(workers=2, rate_limit_analyze_per_hour=limit, rate_limit_per_hour=1000)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            return await asyncio.gather(
                *(http.post("/api/analyze", json={"url": PUBLIC}) for _ in range(40))
            )

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == limit
    assert codes.count(429) == 40 - limit
    assert redis.llen("rq:queue:default") == limit
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:dfd:problem:rate-limited"
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert refused.headers["ratelimit-limit"] == str(limit)
    assert refused.headers["ratelimit-remaining"] == "0"
    accepted = [r for r in responses if r.status_code == 202]
    assert sorted(int(r.headers["ratelimit-remaining"]) for r in accepted) == list(range(limit))


@pytest.mark.integration
def test_limits_survive_a_gateway_restart(gateway, redis) -> None:
    with gateway(rate_limit_analyze_per_hour=2) as client:
        assert client.post("/api/analyze", json={"url": PUBLIC}).status_code == 202
        assert client.post("/api/analyze", json={"url": PUBLIC}).status_code == 202
        assert client.post("/api/analyze", json={"url": PUBLIC}).status_code == 429
    with gateway(rate_limit_analyze_per_hour=2) as client:  # a new app, same Redis
        response = client.post("/api/analyze", json={"url": PUBLIC})
        assert response.status_code == 429
        # The upload limit is separate and still has room.
        assert client.get("/api/job/" + "x" * 32).status_code == 404


@pytest.mark.integration
def test_global_limit_covers_every_api_endpoint(gateway) -> None:
    with gateway(rate_limit_per_hour=3) as client:
        assert client.get("/api/job/" + "a" * 32).status_code == 404
        assert client.post("/api/analyze", json={"url": PUBLIC}).status_code == 202
        assert client.get("/api/job/" + "b" * 32).status_code == 404
        response = client.get("/api/job/" + "c" * 32)
        assert response.status_code == 429
        assert client.post("/api/upload", files={"file": ("a.mp4", b"x")}).status_code == 429
        # Health and metrics are not limited.
        assert client.get("/healthz").status_code == 200


@pytest.mark.integration
def test_forwarded_client_ip_only_from_trusted_proxy(gateway_server) -> None:
    trusted = gateway_server(
        rate_limit_analyze_per_hour=1,
        client_ip_header="X-Forwarded-For",
        trusted_proxies=["127.0.0.1"],
    )

    def post(server, ip: str) -> int:
        headers = {"X-Forwarded-For": ip}
        return httpx.post(
            server.url + "/api/analyze", json={"url": PUBLIC}, headers=headers, timeout=10
        ).status_code

    assert post(trusted, "198.51.100.1") == 202
    assert post(trusted, "198.51.100.1") == 429
    assert post(trusted, "198.51.100.2") == 202  # another client behind the proxy
    trusted.stop()
    untrusted = gateway_server(rate_limit_analyze_per_hour=1, client_ip_header="X-Forwarded-For")
    # The header is not believed: every request is the socket peer's (127.0.0.1), whose
    # quota the trusted run above did not touch.
    assert post(untrusted, "198.51.100.3") == 202
    assert post(untrusted, "198.51.100.4") == 429


@pytest.mark.integration
def test_a_leaked_upload_slot_expires_while_the_client_keeps_trying(redis_url, redis) -> None:
    """A slot left behind by a gateway that died mid-upload frees itself after the
    in-flight TTL, even while the same client keeps asking (each refusal must not
    extend it, or the client stays locked out for as long as it retries)."""
    from gateway.errors import TooManyUploadsError

    async def scenario() -> tuple[bool, bool]:
        client = AsyncRedis.from_url(redis_url)
        limiter = RateLimiter(client, Settings(max_concurrent_uploads_per_ip=1))
        limiter.inflight_ttl_s = 2
        try:
            await limiter.acquire_upload_slot("198.51.100.9")  # never released: leaked
            refused_at_once = False
            try:
                await limiter.acquire_upload_slot("198.51.100.9")
            except TooManyUploadsError:
                refused_at_once = True
            # The client retries every 0.5 s; after the TTL it must get a slot.
            admitted = False
            for _ in range(10):
                await asyncio.sleep(0.5)
                try:
                    slot = await limiter.acquire_upload_slot("198.51.100.9")
                except TooManyUploadsError:
                    continue
                await limiter.release_upload_slot(slot)
                admitted = True
                break
            return refused_at_once, admitted
        finally:
            await client.aclose()

    refused_at_once, admitted = asyncio.run(scenario())
    assert refused_at_once
    assert admitted


@pytest.mark.integration
def test_ipv6_clients_are_limited_per_64_prefix(redis_url, redis) -> None:
    """One IPv6 subscriber holds a whole /64: counting each address apart would give a
    single client 2**64 quotas. IPv4 clients seen through a dual-stack socket
    (::ffff:a.b.c.d) are still counted one address each."""

    async def outcomes() -> list[bool]:
        client = AsyncRedis.from_url(redis_url)
        limiter = RateLimiter(client, Settings())
        policies = [Policy("analyze", 1)]
        results = []
        try:
            for ip in (
                "2001:db8:0:7::1",
                "2001:db8:0:7:ffff::2",  # same /64: refused
                "2001:db8:0:8::1",  # another /64
                "::ffff:198.51.100.1",
                "::ffff:198.51.100.2",  # another IPv4 client
                "198.51.100.1",  # the same IPv4 client as ::ffff:198.51.100.1
            ):
                try:
                    await limiter.hit(ip, policies)
                    results.append(True)
                except RateLimitedError:
                    results.append(False)
        finally:
            await client.aclose()
        return results

    assert asyncio.run(outcomes()) == [True, False, True, True, True, False]
