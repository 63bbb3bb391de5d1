"""What a runtime does for a service, whatever runs it (a local process, a container).

Every method is idempotent, because Temporal retries activities: `start` finds the service
this pipeline run already started (after a worker crash) instead of starting a second one,
and `stop` of a stopped service does nothing.
"""

from __future__ import annotations

from typing import Protocol

from shopfloor.kinds.pipeline.models import Probe, ServiceHandle, ServiceRef, StopReport

LOG_TAIL_BYTES = 4096


class Runtime(Protocol):
    async def start(self, ref: ServiceRef) -> ServiceHandle:
        """Runs the service unless this run's instance of it is running already."""
        ...

    async def probe(self, ref: ServiceRef) -> Probe:
        """Is it running, and does its health check pass?"""
        ...

    async def stop(self, ref: ServiceRef) -> StopReport:
        """Stops it (gently, then not) and removes what it leaves behind."""
        ...

    async def log_tail(self, ref: ServiceRef) -> str: ...
