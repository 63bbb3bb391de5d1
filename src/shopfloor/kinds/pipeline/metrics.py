"""What a worker counts of its pipelines with prometheus-client (the pipeline kind's
`WorkerBundle.observer`)."""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from shopfloor.observability.instruments import as_json

# Every series is one service of one pipeline.
LABELS = ("pipeline", "service")


class PipelineMetrics:
    """Services' health and (re)starts, from the host activities' arguments and results."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.healthy = Gauge(
            "shopfloor_pipeline_service_healthy",
            "1 when the service's last check on this worker passed, 0 when it failed or the "
            "service was not running (gone once the service is stopped)",
            LABELS,
            registry=registry,
        )
        self.checks_failed = Counter(
            "shopfloor_pipeline_health_check_failures",
            "health checks of a running pipeline service that failed, or found it dead",
            LABELS,
            registry=registry,
        )
        self.starts = Counter(
            "shopfloor_pipeline_service_starts",
            "pipeline services started by this worker (an adopted running one not counted)",
            LABELS,
            registry=registry,
        )
        self.restarts = Counter(
            "shopfloor_pipeline_service_restarts",
            "starts of a service of a pipeline run that this worker had started before",
            LABELS,
            registry=registry,
        )
        self._started: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def observe(
        self, activity_type: str, args: list[Any], result: Any, error: BaseException | None
    ) -> None:
        """From a pipeline host activity's argument and result (models or their JSON)."""
        if error is not None or not activity_type.startswith("pipeline_"):
            return
        ref = as_json(args[0]) if args else None
        data = as_json(result)
        if activity_type == "pipeline_probe" and isinstance(ref, dict):
            for one, probe in zip(ref.get("refs", []), data or [], strict=False):
                self._health(one, probe)
        elif not isinstance(ref, dict) or "service" not in ref:
            return
        elif activity_type == "pipeline_wait_healthy":
            self._health(ref, data)
        elif activity_type == "pipeline_start_service" and isinstance(data, dict):
            if data.get("adopted"):
                return
            labels = _labels(ref)
            self.starts.labels(*labels).inc()
            # At zero from the first start: `increase()` and alerts see a series to compare.
            self.restarts.labels(*labels)
            key = (ref.get("run_token", ""), *labels)
            with self._lock:
                again = key in self._started
                self._started.add(key)
            if again:
                self.restarts.labels(*labels).inc()
        elif activity_type == "pipeline_stop_service":
            try:
                self.healthy.remove(*_labels(ref))
            except KeyError:
                pass

    def _health(self, ref: Any, probe: Any) -> None:
        if not isinstance(ref, dict) or not isinstance(probe, dict):
            return
        labels = _labels(ref)
        ok = bool(probe.get("healthy"))
        self.healthy.labels(*labels).set(1 if ok else 0)
        failures = self.checks_failed.labels(*labels)  # at zero from the first check
        if not ok:
            failures.inc()


def _labels(ref: dict[str, Any]) -> tuple[str, str]:
    return str(ref.get("pipeline", "")), str((ref.get("service") or {}).get("name", ""))
