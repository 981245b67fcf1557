"""The fetch stage: the media behind a URL, through the guarded client or yt-dlp.

Direct media is streamed by :mod:`dispatcher.guarded_http` (SSRF checks at every hop, a
byte cap, retries of transient failures). A URL that serves an HTML page, or one of a
known platform, goes to yt-dlp (``dispatcher.ytdlp``) when it is enabled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from dfd.settings import Settings
from dfd.urlcheck import Resolver, check_url
from dispatcher import ytdlp
from dispatcher.errors import NotMediaError
from dispatcher.guarded_http import Fetched, PageNotMedia, download

__all__ = ["Fetched", "fetch"]


def fetch(
    url: str,
    dest_dir: Path,
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[float], None] | None = None,
) -> Fetched:
    """Download the video behind a URL into ``dest_dir``.

    Direct media is streamed; a page (HTML) or a known platform goes through yt-dlp.

    Args:
        url: The user's URL.
        dest_dir: The job's temp folder.
        settings: Limits, timeouts, host lists.
        resolver: ``socket.getaddrinfo`` stand-in (tests).
        transport: httpx transport stand-in (tests).
        sleep: Backoff sleep (tests).
        progress: called with 0..1 as a direct download arrives (not through yt-dlp).

    Raises:
        RejectedURLError: The URL or a redirect is refused, or the server answered 4xx.
        DownloadTooLargeError: Over ``max_download_bytes``.
        NotMediaError: A page with no video, and yt-dlp disabled or unable to find one.
        FetchTransientError: Every attempt failed with a transient error.
    """
    url = check_url(url, settings)
    if settings.ytdlp_enabled and ytdlp.is_platform_url(url, settings):
        return ytdlp.fetch_with_ytdlp(
            url, dest_dir, settings, resolver=resolver, transport=transport, sleep=sleep
        )
    try:
        return download(
            url,
            dest_dir,
            settings,
            resolver=resolver,
            transport=transport,
            sleep=sleep,
            progress=progress,
        )
    except PageNotMedia as page:
        if not settings.ytdlp_enabled:
            raise NotMediaError(
                f"fetch: expected a video at {page.url}, got a {page.content_type} page"
            ) from None
        return ytdlp.fetch_with_ytdlp(
            page.url, dest_dir, settings, resolver=resolver, transport=transport, sleep=sleep
        )
