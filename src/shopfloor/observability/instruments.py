"""What prometheus-client counts in a worker or controller process, beside the SDK's meter:
pipeline services' health and (re)starts, agent calls and tokens by provider, artifact bytes
stored and read, and the kill switch (controller).

These are per-process observations of activities' results (a retried activity counts again),
not job accounting: that stays on the workflow's replay-safe meter (`metrics.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from prometheus_client import CollectorRegistry, Counter, Gauge

from shopfloor.artifacts.base import ArtifactStore


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.healthy = Gauge(
            "shopfloor_pipeline_service_healthy",
            "1 when the service's last check on this worker passed, 0 when it failed or the "
            "service was not running (gone once the service is stopped)",
            ["pipeline", "service"],
            registry=registry,
        )
        self.checks_failed = Counter(
            "shopfloor_pipeline_health_check_failures",
            "health checks of a running pipeline service that failed, or found it dead",
            ["pipeline", "service"],
            registry=registry,
        )
        self.starts = Counter(
            "shopfloor_pipeline_service_starts",
            "pipeline services started by this worker (an adopted running one not counted)",
            ["pipeline", "service"],
            registry=registry,
        )
        self.restarts = Counter(
            "shopfloor_pipeline_service_restarts",
            "starts of a service of a pipeline run that this worker had started before",
            ["pipeline", "service"],
            registry=registry,
        )
        self._started: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def observe(self, activity_type: str, args: list[Any], result: Any) -> None:
        """From a pipeline host activity's argument and result (models or their JSON)."""
        ref = _as_json(args[0]) if args else None
        data = _as_json(result)
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


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "shopfloor_agent_calls",
            "agent steps run (one provider call each, its retries counted again), by provider "
            "and the reply's status (OK, FAIL, PARTIAL, RATE_LIMITED, CONTEXT_EXCEEDED, or "
            "error when the activity raised)",
            ["provider", "status"],
            registry=registry,
        )
        self.tokens = Counter(
            "shopfloor_agent_tokens",
            "tokens the providers reported, by provider and direction (input, output)",
            ["provider", "direction"],
            registry=registry,
        )

    def observe(self, args: list[Any], result: Any, error: BaseException | None) -> None:
        request = _as_json(args[0]) if args else None
        if not isinstance(request, dict):
            return
        agent = str(request.get("agentType") or request.get("agent_type") or "unknown")
        provider = agent.removesuffix("-agent")
        if error is not None:
            self.calls.labels(provider, "error").inc()
            return
        reply = _as_json(result)
        if not isinstance(reply, dict):
            return
        self.calls.labels(provider, str(reply.get("status", "unknown"))).inc()
        usage = reply.get("usage") or {}
        for direction in ("input", "output"):
            count = usage.get(f"{direction}Tokens", usage.get(f"{direction}_tokens", 0))
            if isinstance(count, int) and count > 0:
                self.tokens.labels(provider, direction).inc(count)


class ArtifactMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.bytes = Counter(
            "shopfloor_artifact_bytes",
            "bytes this process stored in the artifact store (in) and read from it (out)",
            ["direction"],
            registry=registry,
        )

    def count(self, store: ArtifactStore) -> ArtifactStore:
        """`store`, its backend's writes and reads counted (every put and every read of any
        backend goes through `_put_stream` and `open`)."""
        put_stream, open_ = store._put_stream, store.open
        stored, read = self.bytes.labels("in"), self.bytes.labels("out")

        def counted_put(uri: str, source: BinaryIO) -> None:
            # typing.BinaryIO is nominal: a wrapper that forwards to a stream is not one.
            put_stream(uri, _Counting(source, stored))  # type: ignore[arg-type]  # see above

        def counted_open(uri: str) -> BinaryIO:
            return _Counting(open_(uri), read)  # type: ignore[return-value]  # BinaryIO: above

        # This one store is counted: its methods are replaced on the instance.
        store._put_stream = counted_put  # type: ignore[method-assign]  # on purpose: above
        store.open = counted_open  # type: ignore[method-assign]  # on purpose: above
        return store


class _Counting:
    """A binary stream whose reads add their byte counts to a counter; the rest passes."""

    def __init__(self, stream: BinaryIO, counter: Any) -> None:
        self._stream = stream
        self._counter = counter

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._counter.inc(len(data))
        return data

    def readinto(self, buffer: Any) -> int | None:
        # typing.BinaryIO declares no readinto; the streams behind it (files, S3 bodies) have it.
        n: int | None = self._stream.readinto(buffer)  # type: ignore[attr-defined]  # see above
        self._counter.inc(n or 0)
        return n

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def __iter__(self) -> Iterator[bytes]:  # a file's line iteration
        for line in self._stream:
            self._counter.inc(len(line))
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


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


def _as_json(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    return value
