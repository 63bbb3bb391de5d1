"""What prometheus-client counts in a worker or controller process, beside the SDK's meter:
artifact bytes stored and read, and the kill switch (controller). Kinds count what is theirs
from their activities' results (`WorkerBundle.observer`: pipeline services' health, agent
calls), through `as_json` below.

These are per-process observations of activities' results (a retried activity counts again),
not job accounting: that stays on the workflow's replay-safe meter (`metrics.py`).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from shopfloor.artifacts.base import ArtifactStore


class ArtifactMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes = Counter(
            "shopfloor_artifact_bytes",
            "bytes this process stored in the artifact store (in) and read from it (out)",
            ["direction"],
            registry=registry,
        )

    def count(self, store: ArtifactStore) -> ArtifactStore:
        """`store`, its backend's writes and reads counted (`ArtifactStore.count_bytes`)."""
        store.count_bytes(stored=self.bytes.labels("in").inc, read=self.bytes.labels("out").inc)
        return store


class KillSwitchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.on = Gauge(
            "shopfloor_kill_switch_on",
            "1 while the kill switch is on (schedules paused, agent turns refused), as last read",
            registry=registry,
        )
        self.temporal_up = Gauge(
            "shopfloor_controller_temporal_up",
            "1 when this controller's last read from Temporal (the kill switch) succeeded",
            registry=registry,
        )


def as_json(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value
