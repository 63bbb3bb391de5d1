"""What a runtime does for a service, whatever runs it (a local process, a container).

Every method is idempotent, because Temporal retries activities: `start` finds the service
this pipeline run already started (after a worker crash) instead of starting a second one,
and `stop` of a stopped service does nothing. Both first stop what earlier runs of the same
pipeline left (a terminated run's services) and report it (`leftovers`); an earlier run whose
job is still running is no leftover (a start refuses, naming it).
"""

from __future__ import annotations

from typing import Protocol

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from shopfloor.kinds.pipeline.models import Probe, ServiceHandle, ServiceRef, StopReport

LOG_TAIL_BYTES = 4096


def current_job() -> str:
    """The workflow id of the pipeline run calling this activity ("" outside an activity): it
    is written on what the run starts, so that a later run can tell whose it is."""
    return (activity.info().workflow_id or "") if activity.in_activity() else ""


async def job_running(job: str) -> bool:
    """Whether the workflow `job` (of this worker's namespace) is running: what it started is
    then not a leftover. False outside an activity (nobody to ask)."""
    if not job or not activity.in_activity():
        return False
    try:
        desc = await activity.client().get_workflow_handle(job).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return desc.status == WorkflowExecutionStatus.RUNNING


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
