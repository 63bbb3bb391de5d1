"""Reading job state back from Temporal: status, progress (heartbeat details), results.

Shared by the controller; everything comes from Temporal, nothing is cached here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus

from shopfloor.registry import kind_for_workflow_type

TERMINAL = {
    WorkflowExecutionStatus.COMPLETED,
    WorkflowExecutionStatus.FAILED,
    WorkflowExecutionStatus.CANCELED,
    WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT,
}


class JobProgress(BaseModel):
    activity: str
    attempt: int
    state: str
    details: Any = None
    last_heartbeat: datetime | None = None
    last_failure: str | None = None


class JobStatus(BaseModel):
    job_id: str
    kind: str | None
    workflow_type: str
    status: str  # RUNNING, COMPLETED, FAILED, CANCELED, TERMINATED, TIMED_OUT, …
    task_queue: str
    started_at: datetime | None
    closed_at: datetime | None
    progress: list[JobProgress] = []


def status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name if status is not None else "UNKNOWN"


async def describe_job(client: Client, job_id: str) -> JobStatus:
    desc: WorkflowExecutionDescription = await client.get_workflow_handle(job_id).describe()
    kind = kind_for_workflow_type(desc.workflow_type)
    progress = []
    for pending in desc.raw_description.pending_activities:
        details = None
        if pending.heartbeat_details.payloads:
            decoded = await client.data_converter.decode(pending.heartbeat_details.payloads)
            details = decoded[0] if len(decoded) == 1 else decoded
        progress.append(
            JobProgress(
                activity=pending.activity_type.name,
                attempt=pending.attempt,
                state=_pending_state(pending.state),
                details=details,
                last_heartbeat=pending.last_heartbeat_time.ToDatetime()
                if pending.HasField("last_heartbeat_time")
                else None,
                last_failure=pending.last_failure.message or None,
            )
        )
    return JobStatus(
        job_id=job_id,
        kind=kind.name if kind else None,
        workflow_type=desc.workflow_type,
        status=status_name(desc.status),
        task_queue=desc.task_queue,
        started_at=desc.start_time,
        closed_at=desc.close_time,
        progress=progress,
    )


def _pending_state(state: int) -> str:
    from temporalio.api.enums.v1 import PendingActivityState

    return PendingActivityState.Name(state).removeprefix("PENDING_ACTIVITY_STATE_")
