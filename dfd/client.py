"""The Python client of dfd's HTTP API (sync :class:`Client`, async :class:`AsyncClient`).

One import, ``from dfd.client import Client``::

    with Client("http://127.0.0.1:8000", api_key="...") as dfd:
        job = dfd.submit_file("clip.mp4")
        view = dfd.wait(job.jobId, on_progress=lambda v: print(v.stage, v.progress))
        print(view.result.label, view.result.confidence)
        image = dfd.evidence(view.result.evidence.thumbnails[0])

``wait`` follows the job's server-sent events and falls back to polling when the stream
cannot be had (a proxy that buffers, an old gateway). Errors are :class:`ApiError` with
the problem document's ``type``, ``status`` and ``detail``. :func:`verify_webhook` checks
a delivery's signature. Standard library and httpx only, like the rest of ``dfd``'s
ground floor.

The two clients differ only in how they send: the requests are built (``_Requests``),
the answers read (``_check``, ``_view``), the event stream resumed (``_EventStream``)
and the waiting tracked (``_Waiter``) in one place each, with no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dfd.schemas import JobView
from dfd.states import FINAL_STATES, JobState
from dfd.webhook_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

__all__ = ["ApiError", "AsyncClient", "Batch", "Client", "Event", "verify_webhook"]


class ApiError(Exception):
    """The gateway refused a request: ``status``, the problem's ``type`` slug and ``detail``."""

    def __init__(self, status: int, type_: str, detail: str) -> None:
        super().__init__(f"{status} {type_}: {detail}")
        self.status, self.type, self.detail = status, type_, detail


@dataclass(frozen=True)
class Event:
    """One server-sent event: ``progress`` (``data`` is stage and progress) or ``done``."""

    event: str
    id: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Batch:
    """An accepted batch: its jobs and, for a batch of files, those refused on their own
    (each ``{"index", "filename", "status", "type", "detail"}``)."""

    batchId: str
    jobIds: tuple[str, ...]
    refused: tuple[dict[str, Any], ...] = ()


def verify_webhook(
    secret: str | bytes, headers: Mapping[str, str], body: bytes, tolerance_s: float = 300
) -> bool:
    """Whether a webhook delivery (its headers and raw body) was signed with ``secret``."""
    lower = {k.lower(): v for k, v in headers.items()}
    return verify(
        secret,
        lower.get(TIMESTAMP_HEADER.lower()),
        lower.get(SIGNATURE_HEADER.lower()),
        body,
        tolerance_s=tolerance_s,
    )


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code < 400:
        return response
    try:
        problem = response.json()
        raise ApiError(
            response.status_code, str(problem["type"]).rsplit(":", 1)[-1], problem["detail"]
        )
    except (ValueError, KeyError, TypeError):
        raise ApiError(response.status_code, "http-error", response.text[:200]) from None


class _EventParser:
    """Server-sent events from lines, one at a time (comments skipped)."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> Event | None:
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                self._fields[name] = value.removeprefix(" ")
            return None
        fields, self._fields = self._fields, {}
        if "data" not in fields:
            return None
        return Event(fields.get("event", "message"), fields.get("id"), json.loads(fields["data"]))


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _is_final(view: JobView) -> bool:
    return JobState(view.status) in FINAL_STATES


# --- what both clients share: requests built, answers read, waiting tracked (no I/O) ---


class _Requests:
    """The requests of the API, built by either httpx client (``build_request`` is the
    same on both); the clients only send them."""

    def __init__(self, http: httpx.Client | httpx.AsyncClient) -> None:
        self._http = http

    def upload(
        self, name: str, content: Any, callback_url: str | None, priority: str | None
    ) -> httpx.Request:
        return self._http.build_request(
            "POST",
            "/api/upload",
            files={"file": (name, content)},
            data={"callback_url": callback_url} if callback_url else {},
            params={"priority": priority} if priority else None,
        )

    def analyze(self, url: str, callback_url: str | None, priority: str | None) -> httpx.Request:
        body: dict[str, Any] = {"url": url}
        if callback_url:
            body["callback_url"] = callback_url
        if priority:
            body["priority"] = priority
        return self._http.build_request("POST", "/api/analyze", json=body)

    def batch_of_urls(self, urls: Sequence[str], callback_url: str | None) -> httpx.Request:
        body: dict[str, Any] = {"items": [{"url": u} for u in urls]}
        if callback_url:
            body["callback_url"] = callback_url
        return self._http.build_request("POST", "/api/batch", json=body)

    def batch_of_files(
        self,
        files: Sequence[tuple[str, Any]],
        callback_url: str | None,
        priority: str | None,
    ) -> httpx.Request:
        return self._http.build_request(
            "POST",
            "/api/batch",
            files=[("file", (name, content)) for name, content in files],
            data={"callback_url": callback_url} if callback_url else {},
            params={"priority": priority} if priority else None,
        )

    def job(self, job_id: str) -> httpx.Request:
        return self._http.build_request("GET", f"/api/job/{job_id}")

    def batch(self, batch_id: str) -> httpx.Request:
        return self._http.build_request("GET", f"/api/batch/{batch_id}")

    def cancel(self, job_id: str) -> httpx.Request:
        return self._http.build_request("DELETE", f"/api/job/{job_id}")

    def evidence(self, url: str) -> httpx.Request:
        return self._http.build_request("GET", url)

    def events(self, job_id: str, last_event_id: str | None) -> httpx.Request:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        return self._http.build_request(
            "GET", f"/api/job/{job_id}/events", headers=headers, timeout=None
        )


def _view(response: httpx.Response) -> JobView:
    return JobView.model_validate(_check(response).json())


def _batch(response: httpx.Response) -> Batch:
    doc = _check(response).json()
    return Batch(
        doc["batchId"],
        tuple(j["jobId"] for j in doc["jobs"]),
        tuple(doc.get("refused") or ()),
    )


def _batch_doc(response: httpx.Response) -> dict[str, Any]:
    return dict(_check(response).json())


class _EventStream:
    """One job's events across reconnections: where to resume (``last_event_id``) and
    whether ``done`` has come."""

    def __init__(self, last_event_id: str | None) -> None:
        self.last_event_id = last_event_id
        self.done = False
        self._parser = _EventParser()

    def reconnect(self) -> None:
        self._parser = _EventParser()

    def feed(self, line: str) -> Event | None:
        event = self._parser.feed(line)
        if event is None:
            return None
        if event.event == "done":
            self.done = True
        else:
            self.last_event_id = event.id
        return event


class _Waiter:
    """What ``wait`` does with each event or polled view, whichever client runs it."""

    def __init__(
        self,
        job_id: str,
        on_progress: Callable[[JobView], None] | None,
        timeout_s: float | None,
    ) -> None:
        self.job_id = job_id
        self.on_progress = on_progress
        self.timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._last: tuple[Any, ...] | None = None

    def on_event(self, event: Event) -> JobView | None:
        """The final view on ``done``; else reports the progress and returns ``None``.

        Raises:
            TimeoutError: past the deadline.
        """
        view = JobView.model_validate({"jobId": self.job_id, **event.data})
        if event.event == "done":
            return view
        if self.on_progress is not None:
            self.on_progress(view)
        self._check_deadline(view)
        return None

    def on_poll(self, view: JobView) -> bool:
        """Whether the polled view is final; else reports it if it changed.

        Raises:
            TimeoutError: past the deadline.
        """
        if _is_final(view):
            return True
        if self.on_progress is not None and (view.status, view.stage, view.progress) != self._last:
            self.on_progress(view)
            self._last = (view.status, view.stage, view.progress)
        self._check_deadline(view)
        return False

    def _check_deadline(self, view: JobView) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError(f"job {self.job_id}: still {view.status} after {self.timeout_s} s")


# Errors after which ``wait`` polls instead of following events.
_NO_STREAM = (httpx.TransportError, ValueError)


class Client:
    """Synchronous client. ``transport`` is httpx's (tests may pass one)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )
        self._requests = _Requests(self._http)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit_file(
        self, path: str | Path, *, callback_url: str | None = None, priority: str | None = None
    ) -> JobView:
        """Upload a video; the accepted job (``waiting``)."""
        path = Path(path)
        with path.open("rb") as fh:  # streamed from the file
            request = self._requests.upload(path.name, fh, callback_url, priority)
            return _view(self._http.send(request))

    def submit_url(
        self, url: str, *, callback_url: str | None = None, priority: str | None = None
    ) -> JobView:
        return _view(self._http.send(self._requests.analyze(url, callback_url, priority)))

    def submit_batch(self, urls: Sequence[str], *, callback_url: str | None = None) -> Batch:
        return _batch(self._http.send(self._requests.batch_of_urls(urls, callback_url)))

    def submit_files(
        self,
        paths: Sequence[str | Path],
        *,
        callback_url: str | None = None,
        priority: str | None = None,
    ) -> Batch:
        """Upload several videos in one request, one job each; files the gateway refuses
        on their own are in the batch's ``refused``."""
        with contextlib.ExitStack() as stack:  # each streamed from its file
            files = [(Path(p).name, stack.enter_context(Path(p).open("rb"))) for p in paths]
            request = self._requests.batch_of_files(files, callback_url, priority)
            return _batch(self._http.send(request))

    def job(self, job_id: str) -> JobView:
        return _view(self._http.send(self._requests.job(job_id)))

    def batch(self, batch_id: str) -> dict[str, Any]:
        return _batch_doc(self._http.send(self._requests.batch(batch_id)))

    def cancel(self, job_id: str) -> JobView:
        return _view(self._http.send(self._requests.cancel(job_id)))

    def evidence(self, url: str) -> bytes:
        """An evidence image by its signed URL (as the job view gives it)."""
        return _check(self._http.send(self._requests.evidence(url))).content

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events until ``done``, reconnecting (with ``Last-Event-ID``) when a
        stream ends early."""
        stream = _EventStream(last_event_id)
        while not stream.done:
            request = self._requests.events(job_id, stream.last_event_id)
            response = self._http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    response.read()
                    _check(response)
                stream.reconnect()
                for line in response.iter_lines():
                    event = stream.feed(line)
                    if event is not None:
                        yield event
                        if stream.done:
                            return
            finally:
                response.close()

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[JobView], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        use_events: bool = True,
    ) -> JobView:
        """Wait for the job's end; ``on_progress`` sees each change. Events, else polling."""
        waiter = _Waiter(job_id, on_progress, timeout_s)
        if use_events:
            try:
                for event in self.events(job_id):
                    if (final := waiter.on_event(event)) is not None:
                        return final
            except _NO_STREAM:
                pass  # no usable stream: poll instead
        while True:
            view = self.job(job_id)
            if waiter.on_poll(view):
                return view
            time.sleep(poll_s)


class AsyncClient:
    """The same API for asyncio."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key),
            timeout=timeout_s,
            transport=transport,
        )
        self._requests = _Requests(self._http)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit_file(
        self, path: str | Path, *, callback_url: str | None = None, priority: str | None = None
    ) -> JobView:
        path = Path(path)
        request = self._requests.upload(path.name, path.read_bytes(), callback_url, priority)
        return _view(await self._http.send(request))

    async def submit_url(
        self, url: str, *, callback_url: str | None = None, priority: str | None = None
    ) -> JobView:
        return _view(await self._http.send(self._requests.analyze(url, callback_url, priority)))

    async def submit_batch(self, urls: Sequence[str], *, callback_url: str | None = None) -> Batch:
        return _batch(await self._http.send(self._requests.batch_of_urls(urls, callback_url)))

    async def submit_files(
        self,
        paths: Sequence[str | Path],
        *,
        callback_url: str | None = None,
        priority: str | None = None,
    ) -> Batch:
        files = [(Path(p).name, Path(p).read_bytes()) for p in paths]
        request = self._requests.batch_of_files(files, callback_url, priority)
        return _batch(await self._http.send(request))

    async def job(self, job_id: str) -> JobView:
        return _view(await self._http.send(self._requests.job(job_id)))

    async def batch(self, batch_id: str) -> dict[str, Any]:
        return _batch_doc(await self._http.send(self._requests.batch(batch_id)))

    async def cancel(self, job_id: str) -> JobView:
        return _view(await self._http.send(self._requests.cancel(job_id)))

    async def evidence(self, url: str) -> bytes:
        return _check(await self._http.send(self._requests.evidence(url))).content

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        stream = _EventStream(last_event_id)
        while not stream.done:
            request = self._requests.events(job_id, stream.last_event_id)
            response = await self._http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    _check(response)
                stream.reconnect()
                async for line in response.aiter_lines():
                    event = stream.feed(line)
                    if event is not None:
                        yield event
                        if stream.done:
                            return
            finally:
                await response.aclose()

    async def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[JobView], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        use_events: bool = True,
    ) -> JobView:
        waiter = _Waiter(job_id, on_progress, timeout_s)
        if use_events:
            try:
                async for event in self.events(job_id):
                    if (final := waiter.on_event(event)) is not None:
                        return final
            except _NO_STREAM:
                pass
        while True:
            view = await self.job(job_id)
            if waiter.on_poll(view):
                return view
            await asyncio.sleep(poll_s)
