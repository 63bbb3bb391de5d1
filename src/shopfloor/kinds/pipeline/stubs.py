"""The pipeline kind's activity contract (see `shopfloor.contracts`): light, models only.

The first two run on the pipeline's own queue, before its workflow knows its host or its
definition; the others on the queue of the host the pipeline is pinned to."""

from __future__ import annotations

from shopfloor.contracts import ActivityStub
from shopfloor.kinds.pipeline.models import (
    PipelineDefinition,
    Probe,
    ProbeRequest,
    ServiceHandle,
    ServiceRef,
    StopReport,
)

# The host's name (None: wherever the worker runs) → that host's queue, prefix included.
HOST_QUEUE = ActivityStub[str | None, str]("pipeline_host_queue", str | None, str)
# A shipped or configured definition's name → the definition.
DEFINITION = ActivityStub[str, PipelineDefinition]("pipeline_definition", str, PipelineDefinition)
START_SERVICE = ActivityStub[ServiceRef, ServiceHandle](
    "pipeline_start_service", ServiceRef, ServiceHandle
)
WAIT_HEALTHY = ActivityStub[ServiceRef, Probe]("pipeline_wait_healthy", ServiceRef, Probe)
PROBE = ActivityStub[ProbeRequest, list[Probe]]("pipeline_probe", ProbeRequest, list[Probe])
STOP_SERVICE = ActivityStub[ServiceRef, StopReport]("pipeline_stop_service", ServiceRef, StopReport)
