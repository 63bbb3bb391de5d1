"""`POST /jobs/<kind>`: one submit route per kind, with the kind's input model as its body.

No `from __future__ import annotations` here on purpose: the route's body type is a
variable of the factory, and FastAPI reads it from the annotation evaluated at definition.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response
from pydantic import BaseModel
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from shopfloor.controller.deps import AUTH, RPC_TIMEOUT, ClientDep, SettingsDep, StoreDep
from shopfloor.controller.links import job_links
from shopfloor.ids import input_digest, job_id_for
from shopfloor.offload import InputTooLarge, offload_inline
from shopfloor.registry import InputRejected, JobKind, queue_for


class SubmittedJob(BaseModel):
    job_id: str
    kind: str
    created: bool  # False: the idempotency key named a job that already exists
    status_url: str
    result_url: str


def submit_router(kind: JobKind) -> APIRouter:
    router = APIRouter(tags=["jobs"], dependencies=AUTH)
    input_model = kind.input_model

    @router.post(
        f"/jobs/{kind.name}",
        summary=f"Submit a {kind.name} job",
        description=kind.summary
        + "\n\nSend `Idempotency-Key` to make retries safe: one key, one job. Large inline "
        "fields (a script's source or files, an STL part) travel through the artifact store "
        "by reference, automatically.",
        status_code=201,
    )
    async def submit(
        job: input_model,  # type: ignore[valid-type]  # FastAPI: the body model, known at run time
        response: Response,
        client: ClientDep,
        settings: SettingsDep,
        store: StoreDep,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> SubmittedJob:
        if kind.check_input is not None:
            try:
                kind.check_input(job, settings)
            except InputRejected as err:
                raise HTTPException(422, str(err)) from err
        try:
            job = await asyncio.to_thread(  # large inputs go to the store (maybe S3)
                offload_inline,
                job,
                store,
                max_inline=settings.inline_input_max_kb * 1024,
                offload=kind.presentation.offload,
            )
        except InputTooLarge as err:
            raise HTTPException(413, str(err)) from err
        job_id = job_id_for(kind.name, idempotency_key)
        digest = input_digest(job)
        created = True
        try:
            await client.start_workflow(
                kind.workflow_type,
                job,
                id=job_id,
                task_queue=queue_for(kind, settings),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={"input_sha256": digest, "kind": kind.name},
                rpc_timeout=RPC_TIMEOUT,
            )
        except WorkflowAlreadyStartedError:
            # Same key → same job. A different input under a used key is the caller's bug.
            desc = await client.get_workflow_handle(job_id).describe()
            memo = await desc.memo()
            if memo.get("input_sha256") != digest:
                raise HTTPException(
                    409, f"idempotency key already used for job {job_id} with different input"
                ) from None
            created = False
        response.status_code = 201 if created else 200
        return SubmittedJob(
            job_id=job_id,
            kind=kind.name,
            created=created,
            **job_links(settings.public_controller_url, job_id),
        )

    return router
