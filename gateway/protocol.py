"""The HTTP/1.1 connection protocol ``dfd gateway`` runs under uvicorn: httptools, with
limits on a request's head (request line and headers) before the app sees it.

uvicorn's httptools protocol buffers a head of any size and waits for it forever: a
128 MiB header cost the gateway 16 s of CPU and 321 MB, and a client sending a header
line every 5 s held its connection open indefinitely. This protocol refuses, before the
app runs and with a problem document:

- more than ``max_header_count`` header lines: ``431 Request Header Fields Too Large``;
- a head over ``max_header_bytes`` (counted as it arrives, so at most one socket read
  more is buffered): ``431``;
- a head not complete ``header_timeout_s`` after its first byte: ``408 Request Timeout``;
- a body that stalls (no byte for ``body_idle_timeout_s``) or trickles (on average under
  ``body_min_bytes_per_s`` once ``body_idle_timeout_s`` has passed): ``408``.

Each closes the connection. The body's time is counted only while the gateway is ready
to read: while uvicorn's flow control pauses reading (the app is slower than the
client), the client is not blamed. A body refused mid-request disconnects the app's
receive, so an upload being streamed to disk is abandoned and its ``.part`` file removed
(``gateway.uploads``). The body's size is not limited here (the upload route streams it
under ``max_upload_bytes``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from dfd.settings import Settings

PROBLEM_MEDIA_TYPE = b"application/problem+json"


@dataclass(frozen=True)
class HeadLimits:
    """Limits on one request's head.

    Attributes:
        max_header_count: Header lines allowed.
        max_header_bytes: Bytes of request line and headers allowed.
        header_timeout_s: Seconds from a head's first byte to its end.
    """

    max_header_count: int
    max_header_bytes: int
    header_timeout_s: float
    body_idle_timeout_s: float = 30.0
    body_min_bytes_per_s: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(
            settings.gateway_max_header_count,
            settings.gateway_max_header_bytes,
            settings.gateway_header_timeout_s,
            settings.gateway_body_idle_timeout_s,
            settings.gateway_body_min_bytes_per_s,
        )

    @property
    def body_check_interval_s(self) -> float:
        """How often an arriving body's pace is looked at."""
        return min(1.0, self.body_idle_timeout_s / 4)


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a head that broke a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HeadLimits` (give them with
    ``functools.partial(GuardedHttpToolsProtocol, limits=...)`` as uvicorn's ``http``)."""

    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._head_open = True  # a connection starts waiting for a head
        self._head_bytes = 0
        self._header_count = 0
        self._head_size = 0
        self._head_timer: asyncio.TimerHandle | None = None
        # The body of the request being read: its pace, counted while reading is not paused.
        self._body_open = False
        self._body_bytes = 0
        self._body_active_s = 0.0  # time the gateway was ready to read this body
        self._body_idle_s = 0.0  # of which since the last byte
        self._body_tick = 0.0
        self._body_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            # Raw bytes while the head is incomplete: bounds what the parser buffers
            # (a head arriving slowly, or one huge header line).
            self._head_bytes += len(data)
        super().data_received(data)
        if self._body_open and self._body_timer is None and not self.transport.is_closing():
            self._body_tick = self.loop.time()
            self._body_timer = self.loop.call_later(
                self.limits.body_check_interval_s, self._check_body
            )
        if not self._head_open or self.transport.is_closing():
            return
        if self._head_bytes > self.limits.max_header_bytes:
            self._too_large()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._head_timed_out
            )

    def send_400_response(self, msg: str) -> None:
        # A limit hit inside a parser callback surfaces as httptools' callback error,
        # which uvicorn answers 400; the refusal already answered.
        if self.transport.is_closing():
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_size > self.limits.max_header_bytes:
            self._too_large()
            raise _Refused
        if self._header_count > self.limits.max_header_count:
            self._refuse(
                431,
                "header-too-large",
                f"request head: expected at most {self.limits.max_header_count} header "
                "lines, got more",
            )
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            raise _Refused  # refused mid-chunk: the app must not see this request
        self._close_head()
        super().on_headers_complete()
        self._body_open = True  # until on_message_complete (at once for a body-less request)
        self._body_bytes = 0
        self._body_active_s = self._body_idle_s = 0.0

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        self._body_idle_s = 0.0
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._close_body()
        super().on_message_complete()
        # What comes next on this connection is the next request's head.
        self._head_open = True
        self._head_bytes = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._close_body()
        super().connection_lost(exc)

    def _close_body(self) -> None:
        self._body_open = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body(self) -> None:
        """Every ``body_check_interval_s`` while a body arrives: refuse it if stalled or
        trickling; time while flow control has paused reading is not counted."""
        self._body_timer = None
        if not self._body_open or self.transport.is_closing():
            return
        now = self.loop.time()
        elapsed, self._body_tick = now - self._body_tick, now
        # Not the client's time: reading paused by flow control, or a client that asked
        # for "100 Continue" before its body and has not been sent it yet.
        waiting = self.cycle is not None and self.cycle.waiting_for_100_continue
        if not self.flow.read_paused and not waiting:
            self._body_active_s += elapsed
            self._body_idle_s += elapsed
        limits = self.limits
        if self._body_idle_s >= limits.body_idle_timeout_s:
            self._refuse_body(
                f"request body: expected a byte within {limits.body_idle_timeout_s:g} s, "
                f"none came for {self._body_idle_s:.0f} s (after {self._body_bytes} bytes)"
            )
            return
        rate = self._body_bytes / self._body_active_s if self._body_active_s else 0.0
        if (
            limits.body_min_bytes_per_s
            and self._body_active_s >= limits.body_idle_timeout_s
            and rate < limits.body_min_bytes_per_s
        ):
            self._refuse_body(
                f"request body: expected at least {limits.body_min_bytes_per_s} bytes/s, "
                f"got {rate:.0f} bytes/s over {self._body_active_s:.0f} s"
            )
            return
        self._body_timer = self.loop.call_later(limits.body_check_interval_s, self._check_body)

    def _refuse_body(self, detail: str) -> None:
        """408 unless the app already began its answer (then only disconnect); the
        app's receive then reports a disconnect, and its own answer is dropped."""
        self._close_body()
        if self.cycle is not None and self.cycle.response_started:
            self.logger.warning("closed a connection: %s", detail)
            self.transport.close()
            return
        self._refuse(408, "request-timeout", detail)

    def _close_head(self) -> None:
        self._head_open = False
        self._head_bytes = 0
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_large(self) -> None:
        self._refuse(
            431,
            "header-too-large",
            f"request head: expected at most {self.limits.max_header_bytes} bytes of "
            "request line and headers, got more",
        )

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_open and not self.transport.is_closing():
            self._refuse(
                408,
                "request-timeout",
                f"request head: expected within {self.limits.header_timeout_s:g} s of its "
                "first byte, it took longer",
            )

    def _refuse(self, status: int, slug: str, detail: str) -> None:
        """Answer ``status`` with a problem document and close the connection."""
        self._close_head()
        if self.transport.is_closing():
            return
        body = json.dumps(
            {
                "type": f"urn:dfd:problem:{slug}",
                "title": STATUS_LINE[status].decode().split(" ", 2)[2].strip(),
                "status": status,
                "detail": detail,
            }
        ).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: ",
            PROBLEM_MEDIA_TYPE,
            b"\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
        ]
        self.logger.warning("refused a request head: %s", detail)
        self.transport.write(b"".join(head) + body)
        self.transport.close()
