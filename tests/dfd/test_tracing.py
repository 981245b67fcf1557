"""dfd.tracing: off without an endpoint; with one, spans reach an OTLP/HTTP collector."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dfd import tracing
from dfd.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _no_provider_left() -> Iterator[None]:
    previous = tracing.use_provider(None)
    yield
    installed = tracing.use_provider(previous)
    if installed is not None:
        installed.shutdown()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    return exporter


class Collector(ThreadingHTTPServer):
    """A loopback OTLP/HTTP receiver: keeps each request's path, content type and body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        self.got = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                collector.received.append((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                collector.got.set()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[Collector]:
        """A collector serving on a free loopback port until the block ends."""
        server = cls()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def spans(self) -> list[tuple[str, dict[str, Any]]]:
        """``(name, attributes)`` of every span received, decoded from the OTLP protobuf."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        found = []
        for _, _, body in self.received:
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: _value(a.value) for a in span.attributes}
                        found.append((span.name, attributes))
        return found

    def service_names(self) -> set[str]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        names = set()
        for _, _, body in self.received:
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                for a in resource.resource.attributes:
                    if a.key == "service.name":
                        names.add(a.value.string_value)
        return names


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


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
