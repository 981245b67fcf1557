"""``GET /api/job/{id}/events`` read by a real HTTP client from a real gateway (uvicorn),
with a real worker running a test job that reports progress through two stages."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.dispatcher.test_worker import FAST, enqueue

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = {**FAST, "events_poll_interval_s": 0.05}


def read_events(response: httpx.Response) -> Iterator[dict]:
    """Server-sent events as ``{"event", "id", "data"}``, comments skipped."""
    event: dict = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


def test_progress_events_then_done_with_the_final_view(
    gateway_server, redis, worker_process
) -> None:
    server = gateway_server(**EVENTS)
    job_id = enqueue(server.settings, redis, "tests.dispatcher.jobfuncs.slow_job")
    worker_process(server.settings)
    with httpx.stream("GET", f"{server.url}/api/job/{job_id}/events", timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response))  # the stream ends by itself after done
    progress = [e for e in events if e["event"] == "progress"]
    assert events[-1]["event"] == "done" and events[-1]["id"] == "done"
    final = json.loads(events[-1]["data"])
    assert final["status"] == "completed" and final["result"]["media"]["job_id"] == job_id
    assert final == httpx.get(f"{server.url}/api/job/{job_id}").json()
    active = [json.loads(e["data"]) for e in progress if '"active"' in e["data"]]
    values = [a["progress"] for a in active if a.get("progress") is not None]
    assert len(set(values)) >= 3, values  # advances within the stages, not just at their ends
    assert values == sorted(values)
    # a job is active a moment before its first progress report names a stage; after that
    # every active view names one of the job's two stages
    stages = [a["stage"] for a in active]
    named = stages[next((i for i, s in enumerate(stages) if s is not None), len(stages)) :]
    assert named and set(named) <= {"decode", "infer"}, stages
    updated = [a["updatedAt"] for a in active]
    assert len(set(updated)) >= 3 and updated == sorted(updated)
    # the worker's write sequence: never backwards; a change of state alone (queued to
    # started, when the stream opens before the worker takes the job) repeats its id
    ids = [int(e["id"]) for e in progress]
    assert ids == sorted(ids) and len(set(ids)) >= len(ids) - 1


def test_reconnect_with_last_event_id_resumes_after_it(
    gateway_server, redis, worker_process
) -> None:
    server = gateway_server(**EVENTS)
    job_id = enqueue(server.settings, redis, "tests.dispatcher.jobfuncs.slow_job")
    worker_process(server.settings)
    url = f"{server.url}/api/job/{job_id}/events"
    with httpx.stream("GET", url, timeout=30) as response:
        seen = []
        for event in read_events(response):
            seen.append(event)
            if event["event"] == "progress" and int(event["id"]) >= 2:
                break  # the client drops the connection mid-job
    last = seen[-1]["id"]
    with httpx.stream("GET", url, headers={"Last-Event-ID": last}, timeout=30) as response:
        rest = list(read_events(response))
    assert rest[-1]["event"] == "done"
    assert all(int(e["id"]) > int(last) for e in rest if e["event"] == "progress")
    # A client reconnecting after the end gets the end again.
    with httpx.stream("GET", url, headers={"Last-Event-ID": "done"}, timeout=30) as response:
        again = list(read_events(response))
    assert [e["event"] for e in again] == ["done"]


def test_unknown_job_is_404_before_any_stream(gateway) -> None:
    with gateway() as client:
        response = client.get("/api/job/0123456789abcdef0123456789abcdef/events")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
