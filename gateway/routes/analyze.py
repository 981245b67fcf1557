"""``POST /api/analyze``: a public video URL, vetted, then enqueued.

The URL's syntax is checked here (``400``); its scheme, host lists and every address its
host resolves to are checked by :mod:`dfd.urlcheck` (``422``). The worker checks again
when it connects, since DNS answers can change between now and then.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from dfd.errors import FetchTransientError, RejectedURLError
from dfd.jobid import new_job_id
from dfd.schemas import JobOptions, JobPayload, JobSource
from dfd.settings import Settings
from dfd.urlcheck import MAX_URL_LENGTH, check_url, resolve_and_vet
from gateway.deps import State, rate_limit_headers, rate_limited, require_api_key
from gateway.errors import InvalidRequestError
from gateway.routes.accepted import accepted, enqueue
from gateway.schemas import AnalyzeRequest, JobAccepted, problem_responses
from gateway.tenants import charge_tenant, check_priority

router = APIRouter(tags=["jobs"])


def check_syntax(url: str) -> urllib.parse.SplitResult:
    """A URL with a scheme and a host, no whitespace or control characters.

    Raises:
        InvalidRequestError: anything that does not parse as an absolute URL.
    """
    if len(url) > MAX_URL_LENGTH or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidRequestError(
            "url: expected an absolute URL without spaces, got something else"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise InvalidRequestError(
            f"url: expected a valid absolute URL, got {url!r} ({exc})"
        ) from exc
    # Other schemes are well-formed but refused by policy (422) in check_url.
    if not parts.scheme or (parts.scheme.lower() in ("http", "https") and not parts.netloc):
        raise InvalidRequestError(
            f"url: expected an absolute URL like https://host/path, got {url!r}"
        )
    return parts


async def check_reachable(host: str, port: int, settings: Settings) -> None:
    """Open (and close) a TCP connection to the vetted address; off unless configured.

    Raises:
        RejectedURLError: no connection within the fetch connect timeout.
    """
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), settings.fetch_connect_timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise RejectedURLError(
            f"url: expected {host}:{port} to accept connections, got {exc or 'a timeout'}"
        ) from exc
    writer.close()


# getaddrinfo blocks, sometimes for seconds (a slow authoritative server, on purpose or
# not): names resolve on threads of their own, under a deadline, so such names cannot
# hold the threads uploads and enqueues run on; past the deadline the request gets 503.
_DNS_THREADS = 8
_dns_pool = ThreadPoolExecutor(_DNS_THREADS, thread_name_prefix="dfd-dns")


async def resolve(host: str, port: int, settings: Settings) -> list:
    """``resolve_and_vet`` off the event loop, within ``fetch_connect_timeout_s``.

    Raises:
        RejectedURLError: as ``resolve_and_vet``.
        FetchTransientError: the name did not resolve in time (worth retrying later).
    """
    work = asyncio.get_running_loop().run_in_executor(
        _dns_pool, resolve_and_vet, host, port, settings
    )
    try:
        return await asyncio.wait_for(work, settings.fetch_connect_timeout_s)
    except TimeoutError as exc:
        raise FetchTransientError(
            f"url: resolving {host!r} took longer than {settings.fetch_connect_timeout_s:g} s"
        ) from exc


async def vet_callback_url(url: str, settings: Settings) -> str:
    """The callback URL, normalised, after the checks a fetched URL gets (the worker
    checks again at delivery).

    Raises:
        InvalidRequestError: malformed, or the server has no webhook secret to sign with.
        RejectedURLError: refused by scheme, host lists or address.
    """
    if settings.webhook_secret is None:
        raise InvalidRequestError(
            "callback_url: expected a server with DFD_WEBHOOK_SECRET set to sign webhooks, "
            "got none set; leave callback_url out or ask the operator"
        )
    check_syntax(url)
    normalised = check_url(url, settings)
    parts = urllib.parse.urlsplit(normalised)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await resolve(parts.hostname or "", port, settings)
    return normalised


def check_options(options: JobOptions | None, settings: Settings) -> JobOptions | None:
    """The request's options, within the operator's bounds.

    Raises:
        InvalidRequestError: a threshold outside the bounds, or every detector weighted 0.
    """
    if options is None:
        return None
    lo, hi = settings.option_threshold_min, settings.option_threshold_max
    if options.threshold is not None and not lo <= options.threshold <= hi:
        raise InvalidRequestError(
            f"options.threshold: expected between {lo:g} and {hi:g}, got {options.threshold:g}"
        )
    if not any(options.applied_to(settings).fusion_scales().values()):
        raise InvalidRequestError(
            "options: expected at least one fused detector with a weight above 0, got none"
        )
    return options


@router.post(
    "/api/analyze",
    status_code=202,
    response_model=JobAccepted,
    summary="Analyze a video at a public URL",
    responses=problem_responses(400, 401, 408, 422, 429, 503),
    # The limit first: a wrong key costs quota too, so keys cannot be guessed without limit.
    dependencies=[Depends(rate_limited("analyze")), Depends(require_api_key)],
)
async def analyze(body: AnalyzeRequest, request: Request, state: State) -> JSONResponse:
    settings = state.settings
    check_syntax(body.url)
    url = check_url(body.url, settings)
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolve(parts.hostname or "", port, settings)
    if settings.check_url_reachable:
        await check_reachable(str(addresses[0]), port, settings)
    callback = await vet_callback_url(body.callback_url, settings) if body.callback_url else None
    check_priority(request, body.priority)
    options = check_options(body.options, settings)
    await charge_tenant(request, state.limiter, "analyze")
    job_id = new_job_id()
    payload = JobPayload(
        job_id=job_id,
        source=JobSource(kind="url", url=url),
        priority=body.priority,
        options=options,
    )
    await enqueue(state, payload, request, callback)
    return accepted(job_id, rate_limit_headers(request))
