"""The controller's own metrics (prometheus-client, one registry per app) and HTTP spans.

`shopfloor_http_requests_total{route,method,status}`, `shopfloor_http_request_duration_seconds
{route,method}` (until the response is sent; for the dashboard's event streams, how long the
stream stayed open), `shopfloor_http_exceptions_total{route,method}` (unhandled errors: 500s)
and `shopfloor_http_in_flight`. Routes are labelled by their template (`/jobs/{job_id}`), never
by the raw path, so a label's values stay few.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopfloor.observability.tracing import tracer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shopfloor_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shopfloor_http_request_duration_seconds",
            "time to answer, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.exceptions = Counter(
            "shopfloor_http_exceptions",
            "requests that raised an unhandled error (answered 500)",
            ["route", "method"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "shopfloor_http_in_flight", "requests being answered now", registry=self.registry
        )
        self.auth_failures = Counter(
            "shopfloor_auth_failures",
            "wrong credentials (bearer tokens, dashboard logins), by how they came",
            ["via"],
            registry=self.registry,
        )
        self.auth_throttled = Counter(
            "shopfloor_auth_throttled",
            "credentials refused unchecked (429) while their client waits after wrong ones",
            ["via"],
            registry=self.registry,
        )


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched"


class ObservedHTTP:
    """Pure ASGI middleware (streams pass through untouched): a server span per request, its
    trace context taken from `traceparent` when a caller sends one, and the metrics above."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = {"code": 500}
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(headers)
        began = time.perf_counter()
        self.metrics.in_flight.inc()
        token = otel_context.attach(parent)
        span = tracer().start_span(f"{method} {scope.get('path', '')}", kind=trace.SpanKind.SERVER)
        span_token = otel_context.attach(trace.set_span_in_context(span))

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, observed_send)
        except BaseException:
            failed = True
            raise
        finally:
            route = route_of(scope)
            code = status["code"]
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, method, str(code)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - began)
            if failed:
                self.metrics.exceptions.labels(route, method).inc()
            span.update_name(f"{method} {route}")
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "http.route": route,
                "url.path": scope.get("path", ""),
                "http.response.status_code": code,
            }
            span.set_attributes(attributes)
            if code >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end()
            otel_context.detach(span_token)
            otel_context.detach(token)
