"""Reading job state back from Temporal: status, the job's own progress report, heartbeats.

Shared by the controller; everything comes from Temporal, nothing is cached here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.common import TypedSearchAttributes

from shopfloor.failures import proto_failure_message
from shopfloor.outcome import OUTCOME_KEY, outcome_of_status
from shopfloor.progress import WorkflowProgress, is_terminal
from shopfloor.registry import PROGRESS_QUERY, kind_for_workflow_type

if TYPE_CHECKING:
    from temporalio.api.enums.v1 import PendingActivityState

__all__ = [
    "ActivityProgress",
    "JobStatus",
    "describe_job",
    "is_terminal",
    "recorded_outcome",
    "runs_in_history",
    "status_name",
]

LOCAL_ACTIVITY_MARKER = "core_local_activity"  # the SDK's marker of a local activity's end

log = logging.getLogger("shopfloor.jobstate")

# A progress query is answered by a worker from its cache in milliseconds; when no worker
# polls, it would wait for one. Status then falls back to heartbeats rather than hang.
PROGRESS_QUERY_TIMEOUT = timedelta(seconds=3)


class ActivityProgress(BaseModel):
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
    # passed, failed, cancelled, timed_out or running: the job's `ShopfloorOutcome`, as its
    # kind decided it (docs/outcomes.md); for runs that recorded none, read from `status`.
    outcome: str = "running"
    task_queue: str
    started_at: datetime | None
    closed_at: datetime | None
    # What the job reports about itself (the `progress` query), when its kind offers one.
    workflow_progress: WorkflowProgress | None = None
    # Heartbeat details of its running activities.
    progress: list[ActivityProgress] = []


def status_name(status: WorkflowExecutionStatus | None) -> str:
    return status.name if status is not None else "UNKNOWN"


async def describe_job(client: Client, job_id: str, *, with_progress: bool = True) -> JobStatus:
    handle = client.get_workflow_handle(job_id)
    desc: WorkflowExecutionDescription = await handle.describe()
    kind = kind_for_workflow_type(desc.workflow_type)
    progress = []
    for pending in desc.raw_description.pending_activities:
        details = None
        if pending.heartbeat_details.payloads:
            decoded = await client.data_converter.decode(pending.heartbeat_details.payloads)
            details = decoded[0] if len(decoded) == 1 else decoded
        progress.append(
            ActivityProgress(
                activity=pending.activity_type.name,
                attempt=pending.attempt,
                state=_pending_state(pending.state),
                details=details,
                last_heartbeat=pending.last_heartbeat_time.ToDatetime()
                if pending.HasField("last_heartbeat_time")
                else None,
                last_failure=proto_failure_message(pending.last_failure) or None,
            )
        )
    status = status_name(desc.status)
    outcome = recorded_outcome(desc.typed_search_attributes, status)
    if is_terminal(status):
        # An ended job has nothing in flight: an activity its end cancelled (an agent call
        # the cancel took with it) may still be listed, CANCEL_REQUESTED, until its worker
        # hears of it. It will never report to the job again.
        progress = []
    reported = None
    if with_progress and kind is not None and kind.reports_progress and status == "RUNNING":
        try:
            reported = await handle.query(
                PROGRESS_QUERY, result_type=WorkflowProgress, rpc_timeout=PROGRESS_QUERY_TIMEOUT
            )
        except Exception as err:  # noqa: BLE001 - no worker, or an old run: heartbeats still show
            log.info("progress query of %s not answered: %s", job_id, err)
    return JobStatus(
        job_id=job_id,
        kind=kind.name if kind else None,
        workflow_type=desc.workflow_type,
        status=status,
        outcome=outcome,
        task_queue=desc.task_queue,
        started_at=desc.start_time,
        closed_at=desc.close_time,
        workflow_progress=reported,
        progress=progress,
    )


def recorded_outcome(attributes: TypedSearchAttributes, status: str) -> str:
    """The outcome a job recorded; for one that recorded none (begun before outcomes were,
    or terminated before its end), the one its Temporal status implies. A job terminated
    while its attribute still says `running` is `cancelled`."""
    recorded = attributes.get(OUTCOME_KEY)
    if recorded and (recorded != "running" or status == "RUNNING"):
        return recorded
    return outcome_of_status(status)


def _pending_state(state: PendingActivityState.ValueType) -> str:
    from temporalio.api.enums.v1 import PendingActivityState

    return PendingActivityState.Name(state).removeprefix("PENDING_ACTIVITY_STATE_")


async def last_activity_result(client: Client, job_id: str) -> Any:
    """The result of the job's last completed activity, from its history: for a job that
    ended CANCELED, what its activity stored and reported while being cancelled."""
    from temporalio.api.enums.v1 import EventType

    history = await client.get_workflow_handle(job_id).fetch_history()
    for event in reversed(history.events):
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            payloads = event.activity_task_completed_event_attributes.result.payloads
            if payloads:
                return (await client.data_converter.decode(payloads))[0]
    return None


def runs_in_history(events: Iterable[HistoryEvent]) -> list[tuple[str, bool]]:
    """Each attempt of a job's activities a history records an end of, in order: the worker
    identity that ran it, and whether it completed. A regular activity's worker is on its
    started event; a local activity's is the worker of the workflow task that recorded its
    marker (a local attempt that handed its run over records a failure)."""
    runs: list[tuple[str, bool]] = []
    started: dict[int, str] = {}
    task_ran_by = ""
    for e in events:
        if e.HasField("workflow_task_started_event_attributes"):
            task_ran_by = e.workflow_task_started_event_attributes.identity
        elif e.HasField("activity_task_started_event_attributes"):
            started[e.activity_task_started_event_attributes.scheduled_event_id] = (
                e.activity_task_started_event_attributes.identity
            )
        elif e.HasField("activity_task_completed_event_attributes"):
            scheduled = e.activity_task_completed_event_attributes.scheduled_event_id
            runs.append((started.get(scheduled, ""), True))
        elif e.marker_recorded_event_attributes.marker_name == LOCAL_ACTIVITY_MARKER:
            runs.append((task_ran_by, not e.marker_recorded_event_attributes.HasField("failure")))
    return runs
