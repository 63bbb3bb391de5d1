"""Jobs of every kind: list, status (with progress), result (long-poll), cancel."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel
from temporalio.client import WorkflowFailureError

from shopfloor.controller.deps import AUTH, RPC_TIMEOUT, ClientDep, SettingsDep
from shopfloor.controller.links import links_in
from shopfloor.failures import failure_details, job_failure_message
from shopfloor.jobstate import (
    JobStatus,
    describe_job,
    is_terminal,
    last_activity_result,
    recorded_outcome,
    status_name,
)
from shopfloor.outcome import OUTCOMES, outcome_name, outcome_of_result
from shopfloor.registry import kind_for_workflow_type, kinds
from shopfloor.visibility import STATUSES, execution_status, jobs_query

MAX_RESULT_WAIT_S = 300

router = APIRouter(tags=["jobs"], dependencies=AUTH)


class JobSummary(BaseModel):
    job_id: str
    kind: str | None
    status: str
    outcome: str  # passed, failed, cancelled, timed_out, running (docs/outcomes.md)
    started_at: datetime | None
    closed_at: datetime | None


class JobResult(BaseModel):
    job_id: str
    kind: str | None
    status: str
    outcome: str = "running"
    # The kind's result — for a job that failed or timed out too (from its failure's details).
    result: Any = None
    error: str | None = None
    # artifact:// URI → HTTP URL the controller serves it at
    links: dict[str, str] = {}


@router.get("/jobs")
async def list_jobs(
    client: ClientDep,
    kind: str | None = None,
    status: Annotated[str | None, Query(description="e.g. Running, Completed")] = None,
    outcome: Annotated[
        str | None, Query(description="passed, failed, cancelled, timed_out, running")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[JobSummary]:
    registry = kinds()
    if kind is not None and kind not in registry:
        raise HTTPException(400, f"unknown kind {kind!r}; known: {sorted(registry)}")
    chosen = [registry[kind]] if kind else list(registry.values())
    types = [t for k in chosen for t in (k.workflow_type, *k.other_workflow_types)]
    wanted = execution_status(status) if status else None
    if status and wanted is None:
        raise HTTPException(
            400, f"unknown status {status[:40]!r}; one of: {', '.join(sorted(STATUSES))}"
        )
    wanted_outcome = outcome_name(outcome) if outcome else None
    if outcome and wanted_outcome is None:
        raise HTTPException(400, f"unknown outcome {outcome[:40]!r}; one of: {', '.join(OUTCOMES)}")
    query = jobs_query(types, status=wanted, outcome=wanted_outcome)
    jobs = []
    async for wf in client.list_workflows(query, limit=limit, rpc_timeout=RPC_TIMEOUT):
        k = kind_for_workflow_type(wf.workflow_type)
        jobs.append(
            JobSummary(
                job_id=wf.id,
                kind=k.name if k else None,
                status=status_name(wf.status),
                outcome=recorded_outcome(wf.typed_search_attributes, status_name(wf.status)),
                started_at=wf.start_time,
                closed_at=wf.close_time,
            )
        )
    return jobs


@router.get("/jobs/{job_id}")
async def job_status(job_id: str, client: ClientDep) -> JobStatus:
    """Status, the job's own progress report (where it offers one) and activity heartbeats."""
    return await describe_job(client, job_id)


@router.get("/jobs/{job_id}/result")
async def job_result(
    job_id: str,
    response: Response,
    client: ClientDep,
    settings: SettingsDep,
    wait: Annotated[float, Query(ge=0, le=MAX_RESULT_WAIT_S)] = 0,
) -> JobResult:
    """The result when the job has ended; with `wait`, long-polls up to that many seconds.
    202 means still running."""
    status = await describe_job(client, job_id, with_progress=False)
    kind = kind_for_workflow_type(status.workflow_type)
    handle = client.get_workflow_handle(job_id, result_type=kind.result_model if kind else None)
    if not is_terminal(status.status) and wait == 0:
        response.status_code = 202
        return JobResult(
            job_id=job_id, kind=status.kind, status=status.status, outcome=status.outcome
        )
    try:
        result = await asyncio.wait_for(handle.result(), timeout=wait or None)
    except TimeoutError:
        response.status_code = 202
        return JobResult(job_id=job_id, kind=status.kind, status="RUNNING")
    except WorkflowFailureError as err:
        final = await describe_job(client, job_id, with_progress=False)
        # A job that failed or timed out carries its kind's whole result in its failure; a
        # cancelled job still lists what it produced before it stopped.
        partial = failure_details(err) if final.status == "FAILED" else None
        if final.status == "CANCELED":
            partial = await last_activity_result(client, job_id)
        return JobResult(
            job_id=job_id,
            kind=status.kind,
            status=final.status,
            outcome=final.outcome,
            error=job_failure_message(err),
            result=partial,
            links=links_in(partial, settings),
        )
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    final = await describe_job(client, job_id, with_progress=False)
    # A run that recorded no outcome (begun before outcomes were): its kind decides now.
    recorded = final.outcome if final.outcome != "passed" else outcome_of_result(kind, payload)
    return JobResult(
        job_id=job_id,
        kind=status.kind,
        status="COMPLETED",
        outcome=recorded,
        result=payload,
        links=links_in(payload, settings),
    )


@router.post("/jobs/{job_id}/cancel", status_code=202)
async def cancel_job(job_id: str, client: ClientDep) -> dict[str, str]:
    status = await describe_job(client, job_id, with_progress=False)
    if status.status != "RUNNING":
        raise HTTPException(409, f"job {job_id} is {status.status}, nothing to cancel")
    await client.get_workflow_handle(job_id).cancel(rpc_timeout=RPC_TIMEOUT)
    return {"job_id": job_id, "status": "CANCEL_REQUESTED"}
