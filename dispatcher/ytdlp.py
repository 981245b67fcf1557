"""The ``fetch`` stage, for pages that are not direct media: yt-dlp as a library.

yt-dlp only extracts (``download=False``): which video a page holds and its direct URL.
Every request it makes while extracting goes through a request handler of ours
(``GuardedRH``) that sends it with the same guarded client as a direct fetch: each hop
vetted, connected to the vetted address, the answer capped. The chosen media URL is then
downloaded by ``dispatcher.guarded_http.download``, with the SSRF guard, byte cap and retries.
So yt-dlp never opens a socket itself, runs no post-processor, merges nothing (the
format chosen is one file with video) and is limited to the allowed extractors.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yt_dlp
from yt_dlp.networking.common import RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError

from dfd.errors import DfdError
from dfd.urlcheck import Resolver, check_url
from dispatcher.errors import DownloadTooLargeError, ExtractorNotAllowedError, NotMediaError
from dispatcher.guarded_http import Fetched, GuardedClient, download

if TYPE_CHECKING:
    from dfd.settings import Settings

log = logging.getLogger(__name__)

# Hosts whose pages go straight to yt-dlp (no direct fetch first), by extractor name.
PLATFORM_HOSTS: dict[str, tuple[str, ...]] = {
    "youtube": ("youtube.com", "youtu.be", "youtube-nocookie.com"),
    "vimeo": ("vimeo.com",),
    "twitter": ("twitter.com", "x.com"),
    "tiktok": ("tiktok.com",),
    "instagram": ("instagram.com",),
    "facebook": ("facebook.com", "fb.watch"),
    "reddit": ("reddit.com", "redd.it"),
    "dailymotion": ("dailymotion.com", "dai.ly"),
}

# One file with video, fetched over plain HTTP(S): no HLS/DASH, nothing to merge.
_HTTP = "[protocol^=http][protocol!*=dash][vcodec!=?none]"
_NOT_PASSED_ON = ("accept-encoding", "host", "cookie")  # see _passed_on


def is_platform_url(url: str, settings: Settings) -> bool:
    """Whether a URL belongs to a platform whose extractor is allowed."""
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    for name, suffixes in PLATFORM_HOSTS.items():
        if name in settings.ytdlp_extractors and any(
            host == s or host.endswith("." + s) for s in suffixes
        ):
            return True
    return False


def fetch_with_ytdlp(
    url: str,
    dest_dir: Path,
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Fetched:
    """Find the video on a page with yt-dlp and download it with the guarded fetch.

    Raises:
        ExtractorNotAllowedError: No allowed extractor handles the page.
        NotMediaError: The page holds no video yt-dlp can reach over HTTP(S).
        DownloadTooLargeError: The chosen file is over ``max_download_bytes``.
        RejectedURLError: The page, a request yt-dlp made, or the media URL is refused.
        FetchTransientError: The network failed; the job may be retried.
    """
    url = check_url(url, settings)
    info = extract(url, settings, resolver=resolver, transport=transport)
    media_url, headers = _chosen_media(info, url, settings)
    fetched = download(
        media_url,
        dest_dir,
        settings,
        headers=headers,
        resolver=resolver,
        transport=transport,
        sleep=sleep,
    )
    return dataclasses.replace(fetched, page_url=url)


def extract(
    url: str,
    settings: Settings,
    *,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """yt-dlp's info dict for a page, with the format chosen but nothing downloaded."""
    handler = _guarded_handler(settings, resolver, transport)
    cap = settings.max_download_bytes
    params: dict[str, Any] = {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _Logger(),
        "noplaylist": True,
        "playlistend": 1,
        "allowed_extractors": [re.escape(n) + "(?::.*)?" for n in _allowed_extractors(settings)],
        "format": f"b{_HTTP}[filesize<=?{cap}][filesize_approx<=?{cap}]/bv*{_HTTP}[filesize<=?{cap}]",
        "max_filesize": cap,
        "postprocessors": [],
        "skip_download": True,
        "proxy": "",  # no proxy from the environment: it would resolve names itself
        "socket_timeout": settings.fetch_read_timeout_s,
        "cachedir": False,
        "enable_file_urls": False,
        "check_formats": False,
        "extractor_retries": 0,
        "color": {"stdout": "no_color", "stderr": "no_color"},
    }
    try:
        with _GuardedYoutubeDL(params, handler) as ydl:
            info = ydl.extract_info(url, download=False)
    except yt_dlp.utils.YoutubeDLError as exc:
        _reraise_refusal(handler)
        text = str(exc)
        unsupported = "Unsupported URL" in text and "generic" not in settings.ytdlp_extractors
        if "No suitable extractor" in text or unsupported:
            raise ExtractorNotAllowedError(
                f"yt-dlp: no allowed extractor ({', '.join(settings.ytdlp_extractors)}) handles {url}"
            ) from exc
        raise NotMediaError(f"yt-dlp: found no video at {url} ({_short(text)})") from exc
    _reraise_refusal(handler)
    if not isinstance(info, dict):
        raise NotMediaError(f"yt-dlp: found no video at {url}")
    return info


def _chosen_media(info: dict[str, Any], url: str, settings: Settings) -> tuple[str, dict[str, str]]:
    if info.get("_type") == "playlist" or "entries" in info:
        entries = [e for e in info.get("entries") or [] if e]
        if not entries:
            raise NotMediaError(f"yt-dlp: {url} is a playlist with no video")
        info = entries[0]
    key = str(info.get("extractor") or info.get("extractor_key") or "").lower().split(":")[0]
    if key and key not in _allowed_extractors(settings):
        raise ExtractorNotAllowedError(f"yt-dlp: extractor {key!r} is not allowed for {url}")
    if info.get("requested_formats"):
        raise NotMediaError(f"yt-dlp: {url} offers video and audio only as separate files")
    media_url = info.get("url")
    if not media_url or info.get("vcodec") == "none":
        raise NotMediaError(f"yt-dlp: {url} offers no single-file video over HTTP(S)")
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > settings.max_download_bytes:
        raise DownloadTooLargeError(
            f"yt-dlp: the video on {url} is {int(size)} bytes; the limit is {settings.max_download_bytes} bytes"
        )
    return check_url(str(media_url), settings), _passed_on(info.get("http_headers") or {})


def _allowed_extractors(settings: Settings) -> list[str]:
    names = [n.lower() for n in settings.ytdlp_extractors]
    if "generic" in names:
        # The generic extractor finds <video> and <source> tags through this embed-only one.
        names.append("html5")
    return names


def _passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    """yt-dlp's headers less ``Host`` (the guarded client sets the vetted name),
    ``Accept-Encoding`` (identity, so the cap counts the wire) and ``Cookie``."""
    return {k: v for k, v in headers.items() if k.lower() not in _NOT_PASSED_ON}


def _short(text: str, limit: int = 200) -> str:
    text = re.sub(r"^ERROR: ", "", text.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reraise_refusal(handler: type[_GuardedRHBase]) -> None:
    # What our handler refused (SSRF, cap, transient network) matters more than the
    # generic "unable to download webpage" yt-dlp turns it into.
    if handler.refusals:
        raise handler.refusals[0]


class _Logger:
    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)


class _GuardedYoutubeDL(yt_dlp.YoutubeDL):
    """YoutubeDL whose only request handler is ours, whatever handlers are installed."""

    def __init__(self, params: dict[str, Any], handler: type[_GuardedRHBase]) -> None:
        self._dfd_handler = handler
        super().__init__(params)

    def build_request_director(self, handlers: Any, preferences: Any = None) -> Any:
        return super().build_request_director([self._dfd_handler], None)


class _GuardedRHBase(RequestHandler):
    """Sends yt-dlp's requests through `GuardedClient`; see `_guarded_handler`."""

    _SUPPORTED_URL_SCHEMES = ("http", "https")
    _SUPPORTED_PROXY_SCHEMES = ()
    _SUPPORTED_FEATURES = ()
    settings: Settings
    # (resolver, transport) in a tuple: a function stored on the class would become a method
    seams: tuple[Resolver | None, httpx.BaseTransport | None] = (None, None)
    refusals: list[DfdError]

    def _check_extensions(self, extensions: dict[str, Any]) -> None:
        super()._check_extensions(extensions)
        for name in ("cookiejar", "timeout", "legacy_ssl", "keep_header_casing"):
            extensions.pop(name, None)

    def _send(self, request: Any) -> Response:
        headers = _passed_on(self._get_headers(request))
        data = request.data
        if data is not None and not isinstance(data, bytes):
            data = data.read() if hasattr(data, "read") else b"".join(data)
        cap = self.settings.ytdlp_page_max_bytes
        try:
            with (
                GuardedClient(
                    self.settings, resolver=self.seams[0], transport=self.seams[1]
                ) as client,
                client.stream(
                    request.method or ("POST" if data else "GET"),
                    request.url,
                    headers=headers,
                    content=data,
                ) as answer,
            ):
                body = bytearray()
                for chunk in answer.iter_bytes(1 << 16):
                    body += chunk
                    if len(body) > cap:
                        raise DownloadTooLargeError(
                            f"yt-dlp: {request.url} sent more than {cap} bytes while extracting"
                        )
                final_url = str(answer.extensions["dfd_url"])
                status, reason, answer_headers = (
                    answer.status_code,
                    answer.reason_phrase,
                    answer.headers,
                )
        except DfdError as exc:
            self.refusals.append(exc)
            raise RequestError(str(exc), cause=exc) from exc
        except httpx.HTTPError as exc:
            raise TransportError(cause=exc) from exc
        # Content-Length/-Encoding describe the wire, not the bytes handed to yt-dlp.
        kept = {
            k: v
            for k, v in answer_headers.items()
            if k.lower() not in ("content-length", "content-encoding")
        }
        response = Response(io.BytesIO(bytes(body)), final_url, kept, status, reason)
        if not 200 <= status < 300:
            raise HTTPError(response)
        return response


def _guarded_handler(
    settings: Settings, resolver: Resolver | None, transport: httpx.BaseTransport | None
) -> type[_GuardedRHBase]:
    # A class per extraction: yt-dlp instantiates handlers itself, and this is how it
    # gets the settings and collects what was refused.
    return type(
        "GuardedRH",
        (_GuardedRHBase,),
        {"settings": settings, "seams": (resolver, transport), "refusals": []},
    )
