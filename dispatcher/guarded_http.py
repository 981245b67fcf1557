"""The guarded HTTP client every download goes through (direct fetches and yt-dlp's).

Every hop (the first URL and each redirect) is checked by ``dfd.urlcheck``: scheme, host
lists, and every address the name resolves to. The request then goes to the vetted
address itself (the URL's host is replaced by the address; the ``Host`` header and the
TLS server name keep the original name, so certificates are still checked against it),
so a DNS answer that changes between the check and the connection cannot redirect it.

The byte cap holds whatever the server says: a ``Content-Length`` over the cap stops
before reading, and the stream is cut as soon as it passes the cap. Transient failures
(connection errors, timeouts, 5xx, 429) are retried with exponential backoff; 4xx and
refusals are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from dfd import __version__
from dfd.errors import FetchTransientError, RejectedURLError
from dfd.urlcheck import Resolver, check_url, literal_address, resolve_and_vet
from dispatcher.errors import (
    DownloadTooLargeError,
    FetchRetriesExhaustedError,
    NotMediaError,
    RemoteRefusedError,
    TooManyRedirectsError,
)

if TYPE_CHECKING:
    from dfd.settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = f"dfd/{__version__} (+https://github.com/dfd)"
PAGE_TYPES = ("text/html", "application/xhtml+xml")
_REDIRECTS = (301, 302, 303, 307, 308)
_TRANSIENT_STATUS = (408, 425, 429)
_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv",
    ".3gp", ".ogv", ".wmv", ".y4m",
}  # fmt: skip
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Fetched:
    """A downloaded file in the job's folder.

    Attributes:
        path: The file.
        size: Its size, bytes.
        content_type: The server's media type, without parameters, or ``None``.
        final_url: The URL the bytes came from, after redirects (for yt-dlp: the media URL).
        sha256: Hex digest of the bytes.
        page_url: The page yt-dlp extracted the media from, or ``None`` for a direct fetch.
    """

    path: Path
    size: int
    content_type: str | None
    final_url: str
    sha256: str
    page_url: str | None = None


class PageNotMedia(Exception):
    """The URL answered with a web page, not media (the fetch stage may try yt-dlp)."""

    def __init__(self, url: str, content_type: str) -> None:
        super().__init__(url)
        self.url = url
        self.content_type = content_type


def download(
    url: str,
    dest_dir: Path,
    settings: Settings,
    *,
    headers: Mapping[str, str] | None = None,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    accept_pages: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Fetched:
    """Stream one URL to a file, with the SSRF guard, byte cap and retries.

    Args:
        accept_pages: Save an HTML answer too; otherwise a page raises ``PageNotMedia``
            (handled by `fetch`).
        progress: called with 0..1 as the body arrives, when its length is announced.

    Raises:
        See `fetch`.
    """
    url = check_url(url, settings)
    attempts = settings.fetch_retries
    last: FetchTransientError | None = None
    for attempt in range(attempts):
        if attempt:
            delay = settings.fetch_backoff_s * 2 ** (attempt - 1)
            log.info(
                "fetch: attempt %d of %d for %s in %.1fs (%s)",
                attempt + 1,
                attempts,
                url,
                delay,
                last,
            )
            sleep(delay)
        try:
            with GuardedClient(settings, resolver=resolver, transport=transport) as client:
                return _download_once(
                    client, url, dest_dir, settings, headers, accept_pages, progress
                )
        except FetchTransientError as exc:
            last = exc
    raise FetchRetriesExhaustedError(
        f"fetch: {url} failed {attempts} times; last: {last}"
    ) from last


def _download_once(
    client: GuardedClient,
    url: str,
    dest_dir: Path,
    settings: Settings,
    headers: Mapping[str, str] | None,
    accept_pages: bool,
    progress: Callable[[float], None] | None = None,
) -> Fetched:
    cap = settings.max_download_bytes
    with client.stream("GET", url, headers=headers) as response:
        final_url = str(response.extensions["dfd_url"])
        status = response.status_code
        if status >= 500 or status in _TRANSIENT_STATUS:
            raise FetchTransientError(f"fetch: {final_url} answered {status}")
        if status >= 400:
            raise RemoteRefusedError(
                f"fetch: {final_url} answered {status} {response.reason_phrase}", status
            )
        if status != 200:
            raise RemoteRefusedError(f"fetch: expected 200 from {final_url}, got {status}", status)
        content_type = _media_type(response.headers.get("content-type"))
        if content_type in PAGE_TYPES and not accept_pages:
            raise PageNotMedia(final_url, content_type)
        announced = response.headers.get("content-length")
        if announced is not None and announced.isdigit() and int(announced) > cap:
            raise DownloadTooLargeError(
                f"fetch: {final_url} announces {int(announced)} bytes; the limit is {cap} bytes"
            )
        dest_dir.mkdir(parents=True, exist_ok=True)
        path = dest_dir / f"download{_suffix(final_url)}"
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("wb") as fh:
                for chunk in _iter_body(response, final_url):
                    size += len(chunk)
                    if size > cap:
                        raise DownloadTooLargeError(
                            f"fetch: {final_url} sent more than {cap} bytes; the limit is {cap} bytes"
                        )
                    digest.update(chunk)
                    fh.write(chunk)
                    if progress is not None and announced is not None and announced.isdigit():
                        progress(min(size / max(int(announced), 1), 1.0))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    if size == 0:
        raise NotMediaError(f"fetch: expected a video at {final_url}, got an empty body")
    return Fetched(path, size, content_type, final_url, digest.hexdigest())


def _iter_body(response: httpx.Response, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes(_CHUNK)
    except httpx.TimeoutException as exc:
        raise FetchTransientError(f"fetch: {url} stopped sending ({type(exc).__name__})") from exc
    except (httpx.TransportError, httpx.DecodingError) as exc:
        raise FetchTransientError(
            f"fetch: reading {url} failed ({type(exc).__name__}: {exc})"
        ) from exc


def _certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _media_type(header: str | None) -> str | None:
    if not header:
        return None
    return header.split(";", 1)[0].strip().lower() or None


def _suffix(url: str) -> str:
    match = re.search(r"(\.[A-Za-z0-9]{1,5})$", urllib.parse.urlsplit(url).path)
    suffix = match.group(1).lower() if match else ""
    return suffix if suffix in _SUFFIXES else ".bin"


class GuardedClient:
    """An httpx client whose every hop is vetted and sent to the vetted address.

    Redirects are followed here, never by httpx, each re-checked with `check_url` and
    `resolve_and_vet`. No proxy from the environment is used (a proxy would resolve the
    name itself).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        timeout = httpx.Timeout(
            connect=settings.fetch_connect_timeout_s,
            read=settings.fetch_read_timeout_s,
            write=settings.fetch_read_timeout_s,
            pool=settings.fetch_connect_timeout_s,
        )
        verify: ssl.SSLContext | bool = True
        if settings.fetch_ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.fetch_ca_file))
        self._client = httpx.Client(
            transport=transport,
            verify=verify,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            # identity: the byte cap counts what is on the wire, and no decompression bomb
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    def __enter__(self) -> GuardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Iterator[httpx.Response]:
        """Send a request, following redirects with every hop vetted.

        Yields the first answer that is not a redirect, whatever its status; its
        ``extensions["dfd_url"]`` is the URL it answers for (after redirects).

        Raises:
            RejectedURLError: A hop is refused.
            TooManyRedirectsError: More than ``fetch_max_redirects`` redirects.
            FetchTransientError: Connecting or sending failed, or timed out.
        """
        current = check_url(url, self._settings)
        for _ in range(self._settings.fetch_max_redirects + 1):
            response = self._send_vetted(method, current, headers, content)
            if response.status_code in _REDIRECTS and "location" in response.headers:
                response.close()
                target = urllib.parse.urljoin(current, response.headers["location"])
                log.debug("fetch: %s redirects to %s", current, target)
                current = check_url(target, self._settings)
                if response.status_code == 303 or (
                    response.status_code in (301, 302) and method == "POST"
                ):
                    method, content = "GET", None
                continue
            response.extensions["dfd_url"] = current
            try:
                yield response
            finally:
                response.close()
            return
        raise TooManyRedirectsError(
            f"fetch: {url} redirected more than {self._settings.fetch_max_redirects} times"
        )

    def _send_vetted(
        self, method: str, url: str, headers: Mapping[str, str] | None, content: bytes | None
    ) -> httpx.Response:
        target = httpx.URL(url)
        host = target.host
        port = target.port or (443 if target.scheme == "https" else 80)
        addresses = resolve_and_vet(host, port, self._settings, resolver=self._resolver)
        request_headers = dict(headers or {})
        request_headers["Host"] = target.netloc.decode("ascii")
        extensions = {}
        if target.scheme == "https" and literal_address(host) is None:
            extensions["sni_hostname"] = host
        last: Exception | None = None
        for address in addresses:
            pinned = target.copy_with(host=str(address))
            request = self._client.build_request(
                method, pinned, headers=request_headers, content=content, extensions=extensions
            )
            try:
                return self._client.send(request, stream=True)
            except httpx.ConnectError as exc:
                if _certificate_error(exc):
                    raise RejectedURLError(
                        f"fetch: {url}: the server's TLS certificate is not valid ({exc})"
                    ) from exc
                last = exc  # try the next vetted address
            except httpx.TimeoutException as exc:
                raise FetchTransientError(f"fetch: {url} timed out ({type(exc).__name__})") from exc
            except httpx.UnsupportedProtocol as exc:
                raise RejectedURLError(f"fetch: {url}: {exc}") from exc
            except httpx.RemoteProtocolError as exc:
                # httpx parses Location itself; a hostile one is a refusal, not a hiccup
                if "location header" in str(exc).lower():
                    raise RejectedURLError(
                        f"fetch: {url} redirects to a refused URL ({exc})"
                    ) from exc
                raise FetchTransientError(
                    f"fetch: {url} failed ({type(exc).__name__}: {exc})"
                ) from exc
            except httpx.TransportError as exc:
                raise FetchTransientError(
                    f"fetch: {url} failed ({type(exc).__name__}: {exc})"
                ) from exc
        raise FetchTransientError(f"fetch: cannot connect to {url} ({last})") from last
