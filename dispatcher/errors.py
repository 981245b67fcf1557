"""Errors raised by the dispatcher's stages, as leaves of the shared tree in ``dfd.errors``.

The gateway and the job runner only need the ``dfd.errors`` classes (``InputError`` is
never retried, ``TransientError`` is); the leaves say more precisely what happened.

    DfdError
    ├── InputError
    │   ├── TooLargeError
    │   │   └── DownloadTooLargeError   fetch: over the byte cap (announced or streamed)
    │   ├── UnsupportedMediaError
    │   │   └── NotMediaError           fetch: a page or document, not a video
    │   ├── CorruptMediaError
    │   │   └── ProbeTimeoutError       probe: the file did not open within the time limit
    │   └── RejectedURLError
    │       ├── TooManyRedirectsError   fetch: more redirects than allowed
    │       ├── RemoteRefusedError      fetch: the server answered 4xx
    │       └── ExtractorNotAllowedError  yt-dlp: the page needs an extractor not allowed
    └── TransientError
        ├── FetchTransientError
        │   └── FetchRetriesExhaustedError  fetch: every attempt failed transiently
        ├── UpstreamUnavailableError
        │   └── StoreUnavailableError   store: the object store did not answer
        └── ProbeKilledError            probe: the demuxer was killed from outside, twice
            └── ProbeOutOfMemoryError   probe: the kernel's OOM killer took the demuxer
"""

from __future__ import annotations

from dfd.errors import (
    CorruptMediaError,
    FetchTransientError,
    RejectedURLError,
    TooLargeError,
    TransientError,
    UnsupportedMediaError,
    UpstreamUnavailableError,
)


class DownloadTooLargeError(TooLargeError):
    """The download is larger than ``max_download_bytes``."""


class NotMediaError(UnsupportedMediaError):
    """The URL serves a page or document that holds no video dfd can extract."""


class ProbeTimeoutError(CorruptMediaError):
    """Probing did not finish within ``probe_timeout_s``: treated as hostile media."""


class TooManyRedirectsError(RejectedURLError):
    """More than ``fetch_max_redirects`` redirects."""


class RemoteRefusedError(RejectedURLError):
    """The remote server answered 4xx; asking again will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ExtractorNotAllowedError(RejectedURLError):
    """yt-dlp would need an extractor that ``ytdlp_extractors`` does not allow."""


class FetchRetriesExhaustedError(FetchTransientError):
    """Every fetch attempt failed with a transient error; the job may be retried later."""


class StoreUnavailableError(UpstreamUnavailableError):
    """The evidence store did not answer or refused a request."""


class ProbeKilledError(TransientError):
    """The probe's child was killed from outside (SIGKILL, SIGTERM) on both tries: the
    worker's trouble, not the file's; the job is retried later."""

    type = "probe-killed"


class ProbeOutOfMemoryError(ProbeKilledError):
    """The kernel's OOM killer killed the probe's child below its own memory limit: the
    worker (or its machine) is out of memory."""

    type = "out-of-memory"
