"""The gateway's request spans, and the traceparent it hands the worker in the job's meta."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rq.job import Job
from rq.serializers import JSONSerializer

from dfd import tracing

pytestmark = pytest.mark.integration


def _request_span(spans: InMemorySpanExporter, name: str):
    (span,) = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def test_upload_span_and_the_traceparent_in_the_job_meta(gateway, redis, grid_clip, spans) -> None:
    with gateway() as client:
        response = client.post("/api/upload", files={"file": ("clip.mpg", grid_clip.read_bytes())})
        assert response.status_code == 202, response.text
    span = _request_span(spans, "POST /api/upload")
    assert span.kind == trace.SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 202
    assert span.attributes["http.route"] == "/api/upload"

    job = Job.fetch(response.json()["jobId"], connection=redis, serializer=JSONSerializer)
    version, trace_id, parent_id, flags = job.meta["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1
    assert int(trace_id, 16) == span.context.trace_id
    assert int(parent_id, 16) == span.context.span_id


def test_a_callers_traceparent_is_continued(gateway, spans) -> None:
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    with gateway() as client:
        response = client.get(
            "/healthz", headers={"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"}
        )
        assert response.status_code == 200
    span = _request_span(spans, "GET /healthz")
    assert span.context.trace_id == int(caller_trace, 16)
    assert span.parent is not None and span.parent.span_id == int("b7ad6b7169203331", 16)


def test_without_tracing_the_job_meta_has_no_traceparent(gateway, redis, grid_clip) -> None:
    assert tracing.provider() is None
    with gateway() as client:
        response = client.post("/api/upload", files={"file": ("clip.mpg", grid_clip.read_bytes())})
        assert response.status_code == 202, response.text
    job = Job.fetch(response.json()["jobId"], connection=redis, serializer=JSONSerializer)
    assert "traceparent" not in job.meta
