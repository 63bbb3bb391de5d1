"""Serving Prometheus metrics: one registry per process whose every sample says which service
it comes from, with the process's own metrics (`process_*`, `python_*`), and — in a worker —
the Temporal SDK's metrics merged in from the SDK's private exporter.

Why a `service` label and not `instance`: Prometheus sets `instance` (the scraped host:port)
itself and renames one found in the exposition; `service` ("shopfloor-controller",
"shopfloor-worker") is what tells a controller's `process_resident_memory_bytes` from a
worker's in one query, and `shopfloor_process_info{host,pid,version}` names the process.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("shopfloor.metrics")
# `_created` samples double every counter's series for a start time Prometheus does not use
# (process_start_time_seconds says when the process started).
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client: unannotated


class ServiceLabelled(Collector):
    """Every sample of `inner` (a registry, or a single collector) with `labels` added (names
    left as they are)."""

    def __init__(self, inner: Collector, labels: dict[str, str]) -> None:
        self.inner = inner
        self.labels = labels

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            yield _relabelled(family, self.labels)


def _relabelled(family: Metric, labels: dict[str, str], name: str | None = None) -> Metric:
    out = Metric(name or family.name, family.documentation, family.type, family.unit)
    for sample in family.samples:
        sample_name = sample.name
        if name is not None:
            sample_name = name + sample.name[len(family.name) :]
        out.samples.append(sample._replace(name=sample_name, labels={**sample.labels, **labels}))
    return out


class ProcessRegistry:
    """`inner`: where this process's instruments register; `outer`: what is served (the same,
    each sample labelled `service`), with process, platform and GC collectors and an info
    metric naming the process."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.inner = CollectorRegistry(auto_describe=True)
        self.outer = CollectorRegistry(auto_describe=False)
        self.outer.register(ServiceLabelled(self.inner, {"service": service}))
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            # The default instances read this very process: registered here too, once each.
            self.outer.register(ServiceLabelled(collector, {"service": service}))
        info = Gauge(
            "shopfloor_process_info",
            "1 per process: its host, pid and shopfloor version",
            ["host", "pid", "version"],
            registry=self.inner,
        )
        info.labels(socket.gethostname(), str(os.getpid()), version("shopfloor")).set(1)

    def add(self, collector: Collector) -> None:
        """A collector served as is, beside the instruments (it adds `service` itself)."""
        self.outer.register(collector)


class SdkMetrics(Collector):
    """The Temporal SDK's exporter (a private loopback port), read at each scrape and served
    with the worker's own metrics, each sample labelled `service`. A counter whose name the SDK
    already ends in `_total` (`temporal_local_activity_total`) got a second suffix from
    `counters_total_suffix`: served with one."""

    def __init__(self, url: str, labels: dict[str, str], *, timeout_s: float = 5.0) -> None:
        self.url = url
        self.labels = labels
        self.timeout_s = timeout_s
        # The SDK's own endpoint is never proxied: reading it must not go through one.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def collect(self) -> Iterator[Metric]:
        try:
            with self.opener.open(self.url, timeout=self.timeout_s) as response:
                text = response.read().decode()
        except OSError as err:
            log.warning("cannot read the SDK's metrics at %s: %s", self.url, err)
            return
        for family in text_string_to_metric_families(text):
            name = family.name
            if family.type == "counter" and name.endswith("_total"):
                name = name.removesuffix("_total")
            yield _relabelled(family, self.labels, name if name != family.name else None)


def serve(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """`registry` on http://host:port/metrics, in a daemon thread; `.shutdown()` stops it."""
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
