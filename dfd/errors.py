"""Domain errors shared by every dfd process.

Each error carries a stable ``type`` slug (used in problem+json responses and in
failed-job reports) and a message that names the object, what was expected and what
came. Third-party exceptions are translated once, at the edge, with ``raise X from exc``.

    DfdError
    ├── InputError            the user's input is wrong; never retried
    │   ├── TooLargeError         over a byte, duration, resolution or frame limit
    │   ├── UnsupportedMediaError not a supported video container or codec
    │   ├── CorruptMediaError     unreadable, truncated or hostile media
    │   ├── RejectedURLError      bad scheme, syntax, SSRF target, allow/blocklist
    │   └── NoUsableSignalError   nothing any detector can look at
    ├── TransientError        may succeed if tried again; retried with backoff
    │   ├── UpstreamUnavailableError  Triton, Redis or the object store is down
    │   └── FetchTransientError       a network hiccup while fetching media
    ├── JobCancelledError     the client cancelled the job (DELETE /api/job/{id}); never retried
    ├── ConfigurationError    the service is set up wrongly (missing weights, bad settings)
    └── InternalError         a bug or an unexpected state in a named stage
"""

from __future__ import annotations


class DfdError(Exception):
    """Base of every dfd error. ``type`` is a stable slug; ``str(err)`` is for people."""

    type: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(DfdError):
    """The input cannot be processed; retrying will not help."""

    type = "invalid-input"


class TooLargeError(InputError):
    type = "too-large"


class UnsupportedMediaError(InputError):
    type = "unsupported-media"


class CorruptMediaError(InputError):
    type = "corrupt-media"


class RejectedURLError(InputError):
    type = "rejected-url"


class NoUsableSignalError(InputError):
    type = "no-usable-signal"


class TransientError(DfdError):
    """A failure that may go away; the queue retries these with backoff."""

    type = "transient"


class UpstreamUnavailableError(TransientError):
    type = "upstream-unavailable"


class FetchTransientError(TransientError):
    type = "fetch-failed"


class JobCancelledError(DfdError):
    """The client asked the job to stop; the job ends ``cancelled``."""

    type = "cancelled"


class ConfigurationError(DfdError):
    type = "configuration"


class InternalError(DfdError):
    type = "internal"
