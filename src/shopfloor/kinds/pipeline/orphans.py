"""What a pipeline's last run left running when it ended without stopping its services.

A run that is terminated (`temporal workflow terminate`, seed 004's stop script) or times out
runs no more code: its services keep running on their host. `pipeline stop` then starts a run
of the same pipeline that is stopped from the start (`PipelineInput.stop_requested`), on the
terminated run's queues and host: its stop of each service finds what earlier runs left by the
pipeline's marker and stops it (`ProcessRuntime`; a docker service's containers of any run),
and its result says what was running.

Light: the controller imports it.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from shopfloor.kinds.pipeline.models import PipelineDefinition, PipelineInput

# How a run can end without stopping what it started.
LEFT_RUNNING = (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT)
HOST_ACTIVITIES = (
    "pipeline_start_service",
    "pipeline_wait_healthy",
    "pipeline_probe",
    "pipeline_stop_service",
)


async def ended_without_stopping(client: Client, job_id: str) -> bool:
    desc = await client.get_workflow_handle(job_id).describe()
    return desc.status in LEFT_RUNNING


async def stop_what_it_left(
    client: Client, job_id: str, known: PipelineDefinition | None
) -> WorkflowHandle[Any, Any]:
    """Starts the stopping run (same id, workflow type, queue and host as the last run)."""
    last = client.get_workflow_handle(job_id)
    started: Any = None
    host_queue: str | None = None
    async for event in last.fetch_history_events():
        if event.HasField("workflow_execution_started_event_attributes"):
            started = event.workflow_execution_started_event_attributes
        elif event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name in HOST_ACTIVITIES:
                host_queue = scheduled.task_queue.name
                break
    assert started is not None, "a workflow's history begins with its start"
    job = None
    if started.input.payloads:
        try:
            [job] = await client.data_converter.decode(started.input.payloads, [PipelineInput])
        except Exception:  # noqa: BLE001 - LogsPipelineWorkflow's seed input: a name
            job = None
    definition = job.definition if job is not None else known
    if definition is None:
        raise LookupError(f"the definition of {job_id!r} is neither known nor in its history")
    return await client.start_workflow(
        started.workflow_type.name,
        PipelineInput(
            definition=definition,
            host_queue=host_queue or (job.host_queue if job is not None else None),
            stop_requested=True,
        ),
        id=job_id,
        task_queue=started.task_queue.name,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )
