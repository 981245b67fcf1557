"""OpenTelemetry traces of a dfd process: set up once, spans from anywhere.

``setup_tracing(settings, service_name)`` is called where each process builds its settings
(``create_app``, the worker's ``main()``, ``dfd analyze``). It does nothing unless
``settings.otlp_endpoint`` is set; then it installs a ``TracerProvider`` whose
``BatchSpanProcessor`` exports OTLP/HTTP to that endpoint. Code takes its tracer from
:func:`tracer`; without a provider of dfd's own that is the OpenTelemetry API's global one
(a no-op unless an embedding application installed its own).

dfd's provider is kept here, not made the process-global one, so an application embedding
the gateway keeps its own, and tests can put an in-memory exporter in with
:func:`use_provider`.

A trace crosses the queue as a W3C ``traceparent`` string in the job's meta: the gateway
stores :func:`current_traceparent` when it enqueues, the worker opens the job's span with
:func:`job_span` under it. rq runs each job in a forked work horse that leaves with
``os._exit``, so the job span is flushed when it ends.

Only the OpenTelemetry API (light, pure Python) is imported at module level; the SDK and
the exporter only when tracing is switched on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dfd.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

_TRACER_NAME = "dfd"
# How long the end of a job may wait for its spans to be sent (the work horse exits after).
_FLUSH_TIMEOUT_MS = 5000

_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()


def setup_tracing(settings: Settings, service_name: str) -> TracerProvider | None:
    """Install dfd's tracer provider when ``settings.otlp_endpoint`` is set.

    Args:
        settings: the process's settings.
        service_name: the ``service.name`` resource attribute (``dfd-gateway``...).

    Returns:
        The provider installed, or ``None`` when tracing is off (no endpoint).
    """
    if not settings.otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    )
    previous = use_provider(provider)
    if previous is not None:  # set up again (a second app in one process): flush the old one
        previous.shutdown()
    log.info("tracing on", extra={"otlp_endpoint": settings.otlp_endpoint})
    return provider


def use_provider(provider: TracerProvider | None) -> TracerProvider | None:
    """Make ``provider`` dfd's (``None``: back to the global one); returns the previous one."""
    global _provider
    previous, _provider = _provider, provider
    return previous


def provider() -> TracerProvider | None:
    """dfd's own provider, if tracing was set up."""
    return _provider


def tracer() -> trace.Tracer:
    """The tracer dfd's spans come from."""
    if _provider is not None:
        return _provider.get_tracer(_TRACER_NAME)
    return trace.get_tracer(_TRACER_NAME)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span; ``None`` when there is none (tracing off)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_from(headers: dict[str, str]) -> Any:
    """The trace context a ``traceparent``/``tracestate`` carrier names (empty when none)."""
    return _propagator.extract(headers)


def flush() -> None:
    """Send the spans still buffered (before a work horse exits)."""
    if _provider is not None:
        _provider.force_flush(_FLUSH_TIMEOUT_MS)


@contextmanager
def job_span(
    job_id: str, source_kind: str, attempt: int = 1, traceparent: str | None = None
) -> Iterator[trace.Span]:
    """The ``dfd.job`` span of one job attempt, a child of the request that enqueued it.

    Args:
        job_id: the job's id.
        source_kind: ``upload``, ``url`` or ``file`` (``dfd analyze``).
        attempt: which run of the job this is.
        traceparent: the enqueuing request's W3C traceparent, if it sent one.
    """
    parent = context_from({"traceparent": traceparent}) if traceparent else None
    attributes: dict[str, str | int] = {
        "dfd.job.id": job_id,
        "dfd.job.attempt": attempt,
        "dfd.source.kind": source_kind,
    }
    try:
        with tracer().start_as_current_span(
            "dfd.job", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
        ) as span:
            yield span
    finally:
        flush()
