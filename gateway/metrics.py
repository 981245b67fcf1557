"""Prometheus metrics of the gateway, and the ASGI middleware that records them.

Each app gets its own registry (tests build many apps in one process). With several
uvicorn worker processes, prometheus-client's multiprocess mode makes ``/metrics``
correct whichever process answers: ``dfd gateway --workers N`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the processes start, each process
writes its values there, and :meth:`GatewayMetrics.render` sums the folder's files.

The middleware also enforces the whole-request timeout (``settings.request_timeout_s``),
writes one JSON log line per request that failed or changed something, and opens the
request's trace span (``dfd.tracing``; a no-op unless tracing is set up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dfd.tracing import context_from, tracer
from gateway.errors import problem_response

log = logging.getLogger("gateway.access")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics", "MetricsMiddleware"]


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dfd_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dfd_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["method", "route"],
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
                120,
            ),
            registry=self.registry,
        )
        self.enqueued = Counter(
            "dfd_jobs_enqueued_total",
            "Jobs enqueued by source kind and priority.",
            ["source", "priority"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "dfd_requests_rejected_total",
            "Requests refused, by problem type.",
            ["type"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "dfd_upload_bytes_total", "Bytes of accepted uploads.", registry=self.registry
        )
        # Tenants are the operator's list (DFD_TENANTS): a bounded label.
        self.tenant_jobs = Counter(
            "dfd_tenant_jobs_total",
            "Jobs accepted per tenant and source kind (tenant 'none' without auth).",
            ["tenant", "source"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry)
        # The values of every process (those that exited too: counters keep their counts).
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=folder)
        return generate_latest(merged)


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess folder, when set; its variable is read at import
    time by prometheus-client itself, so it is an environment variable, not a setting."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _request_span(scope: Scope) -> trace.Span:
    """A server span for the request, continuing the caller's trace if it sent a traceparent."""
    headers = {
        key.decode("latin-1"): value.decode("latin-1")
        for key, value in scope.get("headers", ())
        if key in (b"traceparent", b"tracestate")
    }
    return tracer().start_span(
        f"{scope.get('method', '')} {scope.get('path', '')}",
        context=context_from(headers) if headers else None,
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": scope.get("method", ""),
            "url.path": scope.get("path", ""),
        },
    )


def _end_span(span: trace.Span, method: str, template: str, status: int) -> None:
    # Named after the route template, like the metrics (known only once routing ran).
    span.update_name(f"{method} {template}")
    span.set_attribute("http.route", template)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)
    span.end()


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead): metrics, timeout, access log."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, timeout_s: float) -> None:
        self.app = app
        self.metrics = metrics
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        span = _request_span(scope)
        try:
            with trace.use_span(span, end_on_exit=False):
                async with asyncio.timeout(self.timeout_s):
                    await self.app(scope, receive, send_wrapper)
        except TimeoutError:
            if started:
                raise
            status = 408
            response = problem_response(
                408,
                "request-timeout",
                f"request: expected to finish within {self.timeout_s:g} s, took longer",
                scope.get("path"),
                {"Connection": "close"},
            )
            await response(scope, receive, send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # A fixed set of label values: a client choosing methods must not add series.
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            _end_span(span, method, template, status)
            if status >= 400 or method not in ("GET", "HEAD"):
                client = scope.get("client") or ("", 0)
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope.get("path"),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "peer": client[0],
                    },
                )
