"""What prometheus-client counts in a worker or controller process, beside the SDK's meter:
artifact bytes stored and read, and the kill switch (controller). Kinds count what is theirs
from their activities' results (`WorkerBundle.observer`: pipeline services' health, agent
calls), through `as_json` below.

These are per-process observations of activities' results (a retried activity counts again),
not job accounting: that stays on the workflow's replay-safe meter (`metrics.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

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


def as_json(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value
