"""OpenTelemetry traces, on when `SHOPFLOOR_OTLP_ENDPOINT` is set: the controller's HTTP spans,
the SDK's TracingInterceptor (client → workflow → activity, propagated in Temporal headers),
and `span()` for work inside an activity (the sandboxed run)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from temporalio.client import Client

from shopfloor.settings import Settings

log = logging.getLogger("shopfloor.tracing")
TRACER_NAME = "shopfloor"
_configured: dict[str, Any] = {}


def setup_tracing(settings: Settings, service: str) -> bool:
    """Installs a tracer provider exporting to the OTLP/HTTP endpoint; False when none is
    configured (then every span below is a no-op)."""
    if not settings.otlp_endpoint:
        return False
    if "provider" in _configured:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = settings.otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": f"shopfloor-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _configured["provider"] = provider
    log.info("tracing to %s", endpoint)
    return True


def shutdown_tracing() -> None:
    """Flushes spans not yet exported (call when the process stops)."""
    provider = _configured.pop("provider", None)
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return "provider" in _configured


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def temporal_interceptors() -> list:
    """The SDK's tracing interceptor, when tracing is on (for clients and workers)."""
    if not enabled():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(tracer())]


def traced_client(client: Client) -> Client:
    """The same connection, with trace context carried in the headers of what it starts."""
    extra = temporal_interceptors()
    if not extra:
        return client
    config = client.config()
    config["interceptors"] = [*config.get("interceptors", []), *extra]
    return Client(**config)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span around work in the current trace (a no-op span when tracing is off)."""
    clean = {k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float)}
    with tracer().start_as_current_span(name, attributes=clean) as current:
        yield current
