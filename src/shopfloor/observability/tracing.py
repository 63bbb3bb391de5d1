"""OpenTelemetry traces, on when an OTLP endpoint is configured: the controller's HTTP spans,
the SDK's TracingInterceptor (client → workflow → activity, propagated in Temporal headers),
and `span()` for work inside an activity (the sandboxed run).

The endpoint comes from the standard variables — `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used
as it is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) — or from
`SHOPFLOOR_OTLP_ENDPOINT`, kept as an alias of the latter. `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` turn tracing off; the exporter itself reads
`OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, `_TIMEOUT`, `_COMPRESSION` and `_CERTIFICATE`, the
batch processor `OTEL_BSP_*`, the resource `OTEL_RESOURCE_ATTRIBUTES`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from temporalio.client import Client

from shopfloor.settings import Settings

if TYPE_CHECKING:
    from temporalio.contrib.opentelemetry import TracingInterceptor

log = logging.getLogger("shopfloor.tracing")
TRACER_NAME = "shopfloor"
_configured: dict[str, Any] = {}


def traces_endpoint(settings: Settings, environ: Mapping[str, str] = os.environ) -> str | None:
    """Where spans go (OTLP/HTTP), or None: tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    signal = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if signal:
        return signal  # the signal's own variable is the full URL (the specification's rule)
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or settings.otlp_endpoint
    if not base:
        return None
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def setup_tracing(settings: Settings, service: str) -> bool:
    """Installs a tracer provider exporting to the OTLP/HTTP endpoint; False when none is
    configured (then every span below is a no-op)."""
    endpoint = traces_endpoint(settings)
    if not endpoint:
        return False
    if "provider" in _configured:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

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


def temporal_interceptors() -> list[TracingInterceptor]:
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
