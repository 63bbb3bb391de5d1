"""The controller's own metrics (prometheus-client, one registry per app) and HTTP spans.

`shopfloor_http_requests_total{route,method,status}`, `shopfloor_http_request_duration_seconds
{route,method}` (until the response is sent; for the dashboard's event streams, how long the
stream stayed open), `shopfloor_http_exceptions_total{route,method}` (unhandled errors: 500s)
and `shopfloor_http_in_flight`. Routes are labelled by their template (`/jobs/{job_id}`), never
by the raw path, so a label's values stay few. Every sample is labelled
`service="shopfloor-controller"`; `process_*` and `python_*` describe the controller process,
`shopfloor_kill_switch_on` the switch as last read and `shopfloor_artifact_bytes_total` what
this process read from the store and wrote to it (`instruments.py`).

Each answered request is one line on the `shopfloor.access` logger (method, route, path,
status, duration; with tracing, the line carries its trace id): at INFO, except probes and
scrapes (`/healthz`, `/metrics`) at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopfloor.observability.exposition import ProcessRegistry, serve
from shopfloor.observability.instruments import ArtifactMetrics, KillSwitchMetrics
from shopfloor.observability.tracing import tracer

log = logging.getLogger("shopfloor.metrics")
access_log = logging.getLogger("shopfloor.access")
QUIET_ROUTES = frozenset({"/healthz", "/metrics"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class HttpMetrics:
    def __init__(self) -> None:
        self.process = ProcessRegistry("shopfloor-controller")
        self.registry = self.process.outer  # what /metrics serves
        registry = self.process.inner  # where the instruments live
        self.requests = Counter(
            "shopfloor_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "shopfloor_http_request_duration_seconds",
            "time to answer, by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.exceptions = Counter(
            "shopfloor_http_exceptions",
            "requests that raised an unhandled error (answered 500)",
            ["route", "method"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "shopfloor_http_in_flight", "requests being answered now", registry=registry
        )
        self.auth_failures = Counter(
            "shopfloor_auth_failures",
            "wrong credentials (bearer tokens, dashboard logins), by how they came",
            ["via"],
            registry=registry,
        )
        self.auth_throttled = Counter(
            "shopfloor_auth_throttled",
            "credentials refused unchecked (429) while their client waits after wrong ones",
            ["via"],
            registry=registry,
        )
        self.kill_switch = KillSwitchMetrics(registry)
        self.artifacts = ArtifactMetrics(registry)


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
            took = time.perf_counter() - began  # one figure for the histogram and the log
            route = route_of(scope)
            path = scope.get("path", "")
            code = status["code"]
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(route, method, str(code)).inc()
            self.metrics.latency.labels(route, method).observe(took)
            if failed:
                self.metrics.exceptions.labels(route, method).inc()
            span.update_name(f"{method} {route}")
            attributes: dict[str, Any] = {
                "http.request.method": method,
                "http.route": route,
                "url.path": path,
                "http.response.status_code": code,
            }
            span.set_attributes(attributes)
            if code >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            # Inside the span: a JSON line carries the request's trace and span ids.
            access_log.log(
                logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
                "%s %s %d %.1fms",
                method,
                path,
                code,
                took * 1000,
                extra={
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": code,
                    "duration_s": round(took, 4),
                },
            )
            span.end()
            otel_context.detach(span_token)
            otel_context.detach(token)


KILL_SWITCH_POLL_S = 10.0


@asynccontextmanager
async def observed_lifespan(app: Any) -> AsyncIterator[None]:
    """For the app's life: the kill switch's state read every KILL_SWITCH_POLL_S into its
    gauge, and, with `SHOPFLOOR_CONTROLLER_METRICS_PORT`, /metrics served alone on that port
    (no token: it answers nothing but metrics, so a scraper needs no way into the API)."""
    settings = app.state.settings
    metrics: HttpMetrics = app.state.http_metrics
    server = None
    if settings.controller_metrics_port:
        server = serve(
            metrics.registry, settings.controller_metrics_host, settings.controller_metrics_port
        )
        log.info(
            "metrics on http://%s:%d/metrics",
            settings.controller_metrics_host,
            settings.controller_metrics_port,
        )
    watcher = asyncio.create_task(_watch_kill_switch(app, metrics.kill_switch))
    try:
        yield
    finally:
        watcher.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()


async def _watch_kill_switch(app: Any, gauges: KillSwitchMetrics) -> None:
    from shopfloor.killswitch import read_state

    prefix = app.state.settings.task_queue_prefix
    while True:
        try:
            client = await app.state.temporal.get()
            state = await read_state(client, prefix)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - Temporal down: say so, keep watching
            gauges.temporal_up.set(0)
            log.debug("kill switch not read: %s", err)
        else:
            gauges.temporal_up.set(1)
            gauges.on.set(1 if state.on else 0)
        await asyncio.sleep(KILL_SWITCH_POLL_S)
