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
"""

from __future__ import annotations

import asyncio
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
    batchId: str
    jobIds: tuple[str, ...]


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


def _form(callback_url: str | None) -> dict[str, str]:
    return {"callback_url": callback_url} if callback_url else {}


def _json_body(url: str, callback_url: str | None, priority: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if callback_url:
        body["callback_url"] = callback_url
    if priority:
        body["priority"] = priority
    return body


def _batch_body(urls: Sequence[str], callback_url: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"items": [{"url": u} for u in urls]}
    if callback_url:
        body["callback_url"] = callback_url
    return body


def _is_final(view: JobView) -> bool:
    return JobState(view.status) in FINAL_STATES


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
        with path.open("rb") as fh:
            response = self._http.post(
                "/api/upload",
                files={"file": (path.name, fh)},
                data=_form(callback_url),
                params={"priority": priority} if priority else None,
            )
        return JobView.model_validate(_check(response).json())

    def submit_url(
        self, url: str, *, callback_url: str | None = None, priority: str | None = None
    ) -> JobView:
        response = self._http.post("/api/analyze", json=_json_body(url, callback_url, priority))
        return JobView.model_validate(_check(response).json())

    def submit_batch(self, urls: Sequence[str], *, callback_url: str | None = None) -> Batch:
        response = _check(self._http.post("/api/batch", json=_batch_body(urls, callback_url)))
        doc = response.json()
        return Batch(doc["batchId"], tuple(j["jobId"] for j in doc["jobs"]))

    def job(self, job_id: str) -> JobView:
        return JobView.model_validate(_check(self._http.get(f"/api/job/{job_id}")).json())

    def batch(self, batch_id: str) -> dict[str, Any]:
        return dict(_check(self._http.get(f"/api/batch/{batch_id}")).json())

    def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(_check(self._http.delete(f"/api/job/{job_id}")).json())

    def evidence(self, url: str) -> bytes:
        """An evidence image by its signed URL (as the job view gives it)."""
        return _check(self._http.get(url)).content

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's events until ``done``, reconnecting (with ``Last-Event-ID``) when a
        stream ends early."""
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            with self._http.stream(
                "GET", f"/api/job/{job_id}/events", headers=headers, timeout=None
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    _check(response)
                parser = _EventParser()
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    yield event
                    if event.event == "done":
                        return
                    last_event_id = event.id

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
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if use_events:
            try:
                for event in self.events(job_id):
                    view = JobView.model_validate({"jobId": job_id, **event.data})
                    if event.event == "done":
                        return view
                    if on_progress is not None:
                        on_progress(view)
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id}: still {view.status} after {timeout_s} s")
            except (httpx.TransportError, ValueError):
                pass  # no usable stream: poll instead
        last: tuple[Any, ...] | None = None
        while True:
            view = self.job(job_id)
            if _is_final(view):
                return view
            if on_progress is not None and (view.status, view.stage, view.progress) != last:
                on_progress(view)
                last = (view.status, view.stage, view.progress)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: still {view.status} after {timeout_s} s")
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
        response = await self._http.post(
            "/api/upload",
            files={"file": (path.name, path.read_bytes())},
            data=_form(callback_url),
            params={"priority": priority} if priority else None,
        )
        return JobView.model_validate(_check(response).json())

    async def submit_url(
        self, url: str, *, callback_url: str | None = None, priority: str | None = None
    ) -> JobView:
        response = await self._http.post(
            "/api/analyze", json=_json_body(url, callback_url, priority)
        )
        return JobView.model_validate(_check(response).json())

    async def submit_batch(self, urls: Sequence[str], *, callback_url: str | None = None) -> Batch:
        response = _check(await self._http.post("/api/batch", json=_batch_body(urls, callback_url)))
        doc = response.json()
        return Batch(doc["batchId"], tuple(j["jobId"] for j in doc["jobs"]))

    async def job(self, job_id: str) -> JobView:
        return JobView.model_validate(_check(await self._http.get(f"/api/job/{job_id}")).json())

    async def batch(self, batch_id: str) -> dict[str, Any]:
        return dict(_check(await self._http.get(f"/api/batch/{batch_id}")).json())

    async def cancel(self, job_id: str) -> JobView:
        return JobView.model_validate(_check(await self._http.delete(f"/api/job/{job_id}")).json())

    async def evidence(self, url: str) -> bytes:
        return _check(await self._http.get(url)).content

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            async with self._http.stream(
                "GET", f"/api/job/{job_id}/events", headers=headers, timeout=None
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _check(response)
                parser = _EventParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    yield event
                    if event.event == "done":
                        return
                    last_event_id = event.id

    async def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[JobView], None] | None = None,
        poll_s: float = 1.0,
        use_events: bool = True,
    ) -> JobView:
        if use_events:
            try:
                async for event in self.events(job_id):
                    view = JobView.model_validate({"jobId": job_id, **event.data})
                    if event.event == "done":
                        return view
                    if on_progress is not None:
                        on_progress(view)
            except (httpx.TransportError, ValueError):
                pass
        while True:
            view = await self.job(job_id)
            if _is_final(view):
                return view
            if on_progress is not None:
                on_progress(view)
            await asyncio.sleep(poll_s)
