"""The SDK's shared core (``dfd.client``): both clients build the same requests, read
answers the same way, resume events and track waiting in one place, without I/O."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from dfd.client import ApiError, AsyncClient, Client, Event, _check, _EventStream, _Waiter
from dfd.schemas import JobView

pytestmark = pytest.mark.unit

JOB = "0123456789abcdef0123456789abcdef"


def _built(client: Client | AsyncClient) -> list[httpx.Request]:
    r = client._requests
    return [
        r.analyze("https://e.org/a.mp4", "https://hook.example/x", "high"),
        r.batch_of_urls(["https://e.org/a.mp4", "https://e.org/b.mp4"], None),
        r.job(JOB),
        r.batch(JOB),
        r.cancel(JOB),
        r.evidence("/evidence/k?exp=1&sig=s"),
        r.events(JOB, "7"),
    ]


def test_both_clients_build_the_same_requests() -> None:
    sync = Client("http://gw:8000/", api_key="k" * 20)
    asynchronous = AsyncClient("http://gw:8000/", api_key="k" * 20)
    try:
        for a, b in zip(_built(sync), _built(asynchronous), strict=True):
            assert (a.method, str(a.url)) == (b.method, str(b.url))
            assert a.headers["authorization"] == b.headers["authorization"] == "Bearer " + "k" * 20
            assert a.headers.get("last-event-id") == b.headers.get("last-event-id")
            assert a.read() == asyncio.run(b.aread())
        analyze = _built(sync)[0]
        assert json.loads(analyze.read()) == {
            "url": "https://e.org/a.mp4",
            "callback_url": "https://hook.example/x",
            "priority": "high",
        }
        events = _built(sync)[-1]
        assert events.headers["last-event-id"] == "7"
        assert events.extensions["timeout"] == httpx.Timeout(None).as_dict()  # a long stream
        upload = sync._requests.upload("clip.mp4", b"\x00\x00\x00\x18ftypmp42", None, "low")
        assert upload.url.params["priority"] == "low"
        body = upload.read()
        assert b'name="file"; filename="clip.mp4"' in body and b"ftypmp42" in body
        assert b"callback_url" not in body
    finally:
        sync.close()
        asyncio.run(asynchronous.aclose())


def test_a_problem_document_is_an_api_error() -> None:
    problem = httpx.Response(
        422,
        json={"type": "urn:dfd:problem:rejected-url", "status": 422, "detail": "url: no"},
    )
    with pytest.raises(ApiError) as refused:
        _check(problem)
    assert (refused.value.status, refused.value.type, refused.value.detail) == (
        422,
        "rejected-url",
        "url: no",
    )
    with pytest.raises(ApiError) as plain:
        _check(httpx.Response(502, text="<html>bad gateway</html>"))
    assert plain.value.type == "http-error" and "bad gateway" in plain.value.detail
    ok = httpx.Response(200, json={})
    assert _check(ok) is ok


def test_the_event_stream_resumes_after_the_last_event_and_ends_on_done() -> None:
    stream = _EventStream(None)
    lines = [": keep-alive", "", "retry: 1000", "event: progress", "id: 3"]
    lines += ['data: {"status": "active", "progress": 0.2}', ""]
    events = [e for line in lines if (e := stream.feed(line)) is not None]
    assert events == [Event("progress", "3", {"status": "active", "progress": 0.2})]
    assert stream.last_event_id == "3" and not stream.done
    stream.reconnect()  # a half-read event of a dropped stream is forgotten
    assert stream.feed("event: progress") is None
    stream.reconnect()
    for line in ("event: done", "id: done", 'data: {"status": "completed"}'):
        assert stream.feed(line) is None
    done = stream.feed("")
    assert done is not None and done.event == "done"
    assert stream.done and stream.last_event_id == "3"  # resume point stays the last progress


def test_the_waiter_reports_changes_once_and_keeps_its_deadline() -> None:
    seen: list[JobView] = []
    waiter = _Waiter(JOB, seen.append, timeout_s=None)
    active = JobView.model_validate(
        {"jobId": JOB, "status": "active", "stage": "decode", "progress": 0.3}
    )
    assert waiter.on_poll(active) is False
    assert waiter.on_poll(active) is False  # unchanged: not reported again
    final = JobView.model_validate({"jobId": JOB, "status": "completed", "progress": 1.0})
    assert waiter.on_poll(final) is True
    assert [v.progress for v in seen] == [0.3]
    assert waiter.on_event(Event("progress", "1", {"status": "active", "progress": 0.5})) is None
    got = waiter.on_event(Event("done", "done", {"status": "failed"}))
    assert got is not None and got.status.value == "failed" and got.jobId == JOB
    late = _Waiter(JOB, None, timeout_s=0.01)
    time.sleep(0.02)
    with pytest.raises(TimeoutError, match="still active"):
        late.on_poll(active)
