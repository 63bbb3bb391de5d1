"""`/pipelines`: seed 004's start/stop triggers over HTTP, plus status and the known pipelines.

A pipeline named N runs as the workflow `pipeline-N`, one at a time: starting a running
pipeline returns it as it is. Known pipelines (shipped, or in SHOPFLOOR_PIPELINE_DIRS) run on
their own queue `<name>-queue`; a definition sent in the body that no worker knows runs on the
kind's shared queue.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from shopfloor.controller.deps import AUTH, RPC_TIMEOUT, ClientDep, SettingsDep
from shopfloor.failures import failure_message
from shopfloor.kinds.pipeline import orphans
from shopfloor.kinds.pipeline.definition import (
    DefinitionError,
    known_definitions,
    validate_definition,
)
from shopfloor.kinds.pipeline.models import (
    PipelineDefinition,
    PipelineInput,
    PipelineResult,
    PipelineStatus,
    ServiceStatus,
)
from shopfloor.settings import Settings

router = APIRouter(prefix="/pipelines", tags=["pipelines"], dependencies=AUTH)

KIND_QUEUE = "pipeline-task-queue"
MAX_WAIT_S = 600
POLL_S = 0.5


class StartPipeline(BaseModel):
    definition: dict[str, Any] | None = Field(
        None, description="a whole definition; omit it to start a known pipeline by name"
    )


class PipelineView(BaseModel):
    name: str
    job_id: str
    workflow_type: str | None = None
    task_queue: str | None = None
    phase: str = Field(description="starting, running, stopping, stopped, failed, or not started")
    services: list[ServiceStatus] = []
    error: str | None = None


class KnownPipeline(BaseModel):
    name: str
    description: str
    source: str
    task_queue: str
    services: list[str]
    phase: str


def job_id_of(name: str) -> str:
    return f"pipeline-{name}"


async def view(client: Client, name: str) -> PipelineView:
    """Where the pipeline is: its workflow's `status` query while it runs, its result after."""
    handle = client.get_workflow_handle(job_id_of(name), result_type=PipelineResult)
    try:
        desc = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return PipelineView(name=name, job_id=handle.id, phase="not started")
        raise
    base = PipelineView(
        name=name,
        job_id=handle.id,
        workflow_type=desc.workflow_type,
        task_queue=desc.task_queue,
        phase="starting",
    )
    status = desc.status.name if desc.status else "RUNNING"
    if status == "RUNNING":
        st: PipelineStatus = await handle.query(
            "status", result_type=PipelineStatus, rpc_timeout=RPC_TIMEOUT
        )
        return base.model_copy(
            update={"phase": st.phase, "services": st.services, "error": st.error}
        )
    if status == "COMPLETED":
        result: PipelineResult = await handle.result()
        return base.model_copy(update={"phase": result.phase, "services": result.services})
    try:
        await handle.result()
        error = status.lower()
    except WorkflowFailureError as err:
        error = failure_message(err)
    if desc.status in orphans.LEFT_RUNNING:  # it ran no more code: nothing stopped its services
        error += f"; its services may still run: `shopfloor pipeline stop {name}` stops them"
    return base.model_copy(update={"phase": "failed", "error": error})


async def _wait(client: Client, name: str, until: set[str], wait_s: float) -> PipelineView:
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        current = await view(client, name)
        if current.phase in until or asyncio.get_running_loop().time() >= deadline:
            return current
        await asyncio.sleep(POLL_S)


def _definition(
    name: str, body: StartPipeline | None, settings: Settings
) -> tuple[PipelineDefinition, bool]:
    """The definition to run, and whether workers know it (then it has its own queue)."""
    known, _ = known_definitions(settings)
    if body is not None and body.definition is not None:
        try:
            definition = validate_definition(body.definition)
        except DefinitionError as err:
            raise HTTPException(422, str(err)) from None
        if definition.name != name:
            raise HTTPException(422, f"the definition is named {definition.name!r}, not {name!r}")
        return definition, name in known
    if name not in known:
        raise HTTPException(404, f"no pipeline named {name!r}; known: {sorted(known)}")
    return known[name][1], True


@router.get("")
async def list_pipelines(client: ClientDep, settings: SettingsDep) -> list[KnownPipeline]:
    """The pipelines this deployment knows (shipped and SHOPFLOOR_PIPELINE_DIRS) and their phase."""
    known, _ = known_definitions(settings)
    phases = await asyncio.gather(*(view(client, name) for name in known))
    return [
        KnownPipeline(
            name=name,
            description=d.description,
            source=str(path),
            task_queue=d.queue,
            services=d.start_order(),
            phase=v.phase,
        )
        for (name, (path, d)), v in zip(known.items(), phases, strict=True)
    ]


@router.post("/{name}/start")
async def start_pipeline(
    name: str,
    client: ClientDep,
    settings: SettingsDep,
    body: Annotated[StartPipeline | None, Body()] = None,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait until all are healthy")
    ] = 0,
) -> PipelineView:
    """Start the pipeline (idempotent: a running one is returned as it is). With `wait`, answers
    once every service is healthy (`running`) or the start failed (`failed`, with the reason)."""
    definition, known = _definition(name, body, settings)
    queue = settings.task_queue_prefix + (definition.queue if known else KIND_QUEUE)
    handle: WorkflowHandle[Any, Any] = await client.start_workflow(
        definition.workflow,
        PipelineInput(definition=definition),
        id=job_id_of(name),
        task_queue=queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        rpc_timeout=RPC_TIMEOUT,
    )
    if wait:
        return await _wait(client, name, {"running", "failed", "stopped"}, wait)
    return PipelineView(
        name=name,
        job_id=handle.id,
        workflow_type=definition.workflow,
        task_queue=queue,
        phase="starting",
    )


@router.post("/{name}/stop")
async def stop_pipeline(
    name: str,
    client: ClientDep,
    settings: SettingsDep,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="seconds to wait until all are stopped")
    ] = 0,
) -> PipelineView:
    """Stop every service in reverse order. With `wait`, answers once all are stopped. A
    pipeline whose last run was terminated (or timed out) left its services running: a run
    that starts stopped finds them by the pipeline's marker and stops them."""
    current = await view(client, name)
    if current.phase == "not started":
        raise HTTPException(404, f"pipeline {name!r} was never started")
    if current.phase in ("stopped", "failed"):
        if not await orphans.ended_without_stopping(client, job_id_of(name)):
            return current
        known, _ = known_definitions(settings)
        await orphans.stop_what_it_left(
            client, job_id_of(name), known[name][1] if name in known else None
        )
        if wait:
            return await _wait(client, name, {"stopped", "failed"}, wait)
        return current.model_copy(update={"phase": "stopping", "error": None})
    await client.get_workflow_handle(job_id_of(name)).signal("stop", rpc_timeout=RPC_TIMEOUT)
    if wait:
        return await _wait(client, name, {"stopped", "failed"}, wait)
    return current.model_copy(update={"phase": "stopping"})


@router.get("/{name}")
async def pipeline_status(name: str, client: ClientDep) -> PipelineView:
    current = await view(client, name)
    if current.phase == "not started":
        raise HTTPException(404, f"pipeline {name!r} was never started")
    return current
