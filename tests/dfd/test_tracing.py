"""dfd.tracing: off without an endpoint; with one, spans reach an OTLP/HTTP collector."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace

from dfd import tracing
from dfd.settings import Settings
from tests.fixtures.tracing import Collector

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_provider_left() -> Iterator[None]:
    previous = tracing.use_provider(None)
    yield
    installed = tracing.use_provider(previous)
    if installed is not None:
        installed.shutdown()


@pytest.fixture
def collector() -> Iterator[Collector]:
    with Collector.running() as server:
        yield server


def test_without_an_endpoint_nothing_is_installed_or_exported(tmp_path) -> None:
    assert tracing.setup_tracing(Settings(data_dir=tmp_path), "dfd-test") is None
    assert tracing.provider() is None
    with tracing.tracer().start_as_current_span("nothing") as span:
        assert not span.is_recording()
        assert tracing.current_traceparent() is None
    tracing.flush()  # nothing to flush; must not fail


def test_with_an_endpoint_spans_are_posted_to_the_collector(tmp_path, collector) -> None:
    provider = tracing.setup_tracing(
        Settings(data_dir=tmp_path, otlp_endpoint=collector.endpoint), "dfd-test"
    )
    assert provider is not None and tracing.provider() is provider
    with tracing.job_span("job-1", "upload", attempt=2):
        pass  # job_span flushes when it ends
    assert collector.got.wait(10)
    path, content_type, _ = collector.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert collector.spans() == [
        ("dfd.job", {"dfd.job.id": "job-1", "dfd.job.attempt": 2, "dfd.source.kind": "upload"})
    ]
    assert collector.service_names() == {"dfd-test"}


def test_job_span_continues_the_enqueuing_trace(spans) -> None:
    with tracing.tracer().start_as_current_span("request") as request:
        traceparent = tracing.current_traceparent()
    assert traceparent is not None
    version, trace_id, span_id, flags = traceparent.split("-")
    ctx = request.get_span_context()
    assert version == "00" and int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == ctx.trace_id and int(span_id, 16) == ctx.span_id

    with (
        tracing.job_span("job-2", "url", attempt=3, traceparent=traceparent),
        tracing.tracer().start_as_current_span("dfd.stage.probe"),
    ):
        pass
    by_name = {s.name: s for s in spans.get_finished_spans()}
    job, stage = by_name["dfd.job"], by_name["dfd.stage.probe"]
    assert job.context.trace_id == ctx.trace_id
    assert job.parent is not None and job.parent.span_id == ctx.span_id
    assert job.kind == trace.SpanKind.CONSUMER
    assert dict(job.attributes or {}) == {
        "dfd.job.id": "job-2",
        "dfd.job.attempt": 3,
        "dfd.source.kind": "url",
    }
    assert stage.parent is not None and stage.parent.span_id == job.context.span_id


def test_job_span_without_traceparent_starts_a_new_trace(spans) -> None:
    with tracing.job_span("job-3", "file"):
        pass
    (job,) = spans.get_finished_spans()
    assert job.name == "dfd.job" and job.parent is None
