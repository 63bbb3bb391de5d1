"""FastAPI app. Job routes are generated from the registry: one submit route per kind."""

from __future__ import annotations

import asyncio
import mimetypes
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import CancelledError, TerminatedError, WorkflowAlreadyStartedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from shopfloor.artifacts import SCHEME, ArtifactStore
from shopfloor.controller.errors import TemporalUnavailable, install_error_handlers
from shopfloor.ids import input_digest, job_id_for
from shopfloor.jobstate import TERMINAL, JobStatus, describe_job, status_name
from shopfloor.registry import InputRejected, JobKind, kind_for_workflow_type, kinds, queue_for
from shopfloor.settings import Settings, get_settings
from shopfloor.temporal import connect

RPC_TIMEOUT_S = 10.0
MAX_UPLOAD = 64 * 1024 * 1024
MAX_RESULT_WAIT_S = 300


class SubmittedJob(BaseModel):
    job_id: str
    kind: str
    created: bool  # False: the idempotency key named a job that already exists
    status_url: str
    result_url: str


class JobResult(BaseModel):
    job_id: str
    kind: str | None
    status: str
    result: Any = None
    error: str | None = None
    # artifact:// URI → HTTP URL the controller serves it at
    links: dict[str, str] = {}


class TemporalConnection:
    """Connects on first use and again after a failure: the controller starts and keeps
    answering (503) while Temporal is down, and recovers without a restart."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(connect(self.settings), RPC_TIMEOUT_S)
                except (RuntimeError, OSError, TimeoutError) as err:
                    raise TemporalUnavailable(str(err) or type(err).__name__) from err
            return self._client


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    temporal = TemporalConnection(settings)
    store = ArtifactStore(settings.artifact_root)
    base_url = settings.public_controller_url
    app = FastAPI(
        title="shopfloor",
        version="0.1.0",
        description="Durable jobs for agent systems, on Temporal.",
    )
    install_error_handlers(app, settings.target_address)

    def require_token(
        authorization: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query(description="alternative to the header")] = None,
    ) -> None:
        if settings.api_token is None:
            return
        expected = settings.api_token.get_secret_value()
        given = authorization.removeprefix("Bearer ").strip() if authorization else token
        if given != expected:
            raise HTTPException(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(require_token)]

    def links_in(value: Any) -> dict[str, str]:
        found: dict[str, str] = {}

        def walk(v: Any) -> None:
            if isinstance(v, str) and v.startswith(SCHEME):
                found[v] = f"{base_url}/artifacts/{v[len(SCHEME) :]}"
            elif isinstance(v, dict):
                for item in v.values():
                    walk(item)
            elif isinstance(v, list):
                for item in v:
                    walk(item)

        walk(value)
        return found

    @app.get("/healthz", tags=["meta"])
    async def healthz(response: Response) -> dict[str, Any]:
        try:
            client = await temporal.get()
            await client.workflow_service.get_system_info(
                GetSystemInfoRequest(), timeout=timedelta(seconds=3)
            )
        except Exception as err:  # any failure here means "not healthy", never a 500
            response.status_code = 503
            return {"ok": False, "temporal": settings.target_address, "error": str(err)[:300]}
        return {"ok": True, "temporal": settings.target_address, "namespace": settings.namespace}

    @app.get("/kinds", tags=["meta"], dependencies=auth)
    async def list_kinds() -> list[dict[str, Any]]:
        return [
            {
                "name": k.name,
                "summary": k.summary,
                "workflow_type": k.workflow_type,
                "task_queue": queue_for(k, settings),
                "input_schema": k.input_model.model_json_schema(),
            }
            for k in kinds().values()
        ]

    def add_submit_route(kind: JobKind) -> None:
        async def submit(
            request: Request,
            response: Response,
            body: Any,
            idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
        ) -> SubmittedJob:
            job = body
            if kind.check_input is not None:
                try:
                    kind.check_input(job, settings)
                except InputRejected as err:
                    raise HTTPException(422, str(err)) from err
            client = await temporal.get()
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
                    rpc_timeout=_rpc_timeout(),
                )
            except WorkflowAlreadyStartedError:
                # Same key → same job. A different input under a used key is the caller's bug.
                desc = await client.get_workflow_handle(job_id).describe()
                memo = await desc.memo()
                if memo.get("input_sha256") != digest:
                    raise HTTPException(
                        409,
                        f"idempotency key already used for job {job_id} with different input",
                    ) from None
                created = False
            response.status_code = 201 if created else 200
            return SubmittedJob(
                job_id=job_id,
                kind=kind.name,
                created=created,
                status_url=f"{base_url}/jobs/{job_id}",
                result_url=f"{base_url}/jobs/{job_id}/result",
            )

        submit.__annotations__["body"] = kind.input_model
        app.post(
            f"/jobs/{kind.name}",
            tags=["jobs"],
            summary=f"Submit a {kind.name} job",
            description=kind.summary
            + "\n\nSend `Idempotency-Key` to make retries safe: one key, one job.",
            dependencies=auth,
            status_code=201,
            response_model=SubmittedJob,
        )(submit)

    for kind in kinds().values():
        add_submit_route(kind)

    @app.get("/jobs", tags=["jobs"], dependencies=auth)
    async def list_jobs(
        kind: str | None = None,
        status: Annotated[str | None, Query(description="e.g. Running, Completed")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[dict[str, Any]]:
        registry = kinds()
        if kind is not None and kind not in registry:
            raise HTTPException(400, f"unknown kind {kind!r}; known: {sorted(registry)}")
        types = (
            [registry[kind].workflow_type] if kind else [k.workflow_type for k in registry.values()]
        )
        query = "WorkflowType IN (" + ", ".join(f"'{t}'" for t in types) + ")"
        if status:
            if not status.isalpha():
                raise HTTPException(400, "status must be a word such as Running or Completed")
            query += f" AND ExecutionStatus = '{status.capitalize()}'"
        client = await temporal.get()
        jobs = []
        async for wf in client.list_workflows(query, limit=limit, rpc_timeout=_rpc_timeout()):
            k = kind_for_workflow_type(wf.workflow_type)
            jobs.append(
                {
                    "job_id": wf.id,
                    "kind": k.name if k else None,
                    "status": status_name(wf.status),
                    "started_at": wf.start_time,
                    "closed_at": wf.close_time,
                }
            )
        return jobs

    @app.get("/jobs/{job_id}", tags=["jobs"], dependencies=auth)
    async def job_status(job_id: str) -> JobStatus:
        return await describe_job(await temporal.get(), job_id)

    @app.get("/jobs/{job_id}/result", tags=["jobs"], dependencies=auth)
    async def job_result(
        job_id: str,
        response: Response,
        wait: Annotated[float, Query(ge=0, le=MAX_RESULT_WAIT_S)] = 0,
    ) -> JobResult:
        """The result when the job has ended; with `wait`, long-polls up to that many seconds.
        202 means still running."""
        client = await temporal.get()
        status = await describe_job(client, job_id)
        kind = kind_for_workflow_type(status.workflow_type)
        handle = client.get_workflow_handle(job_id, result_type=kind.result_model if kind else None)
        running = status.status not in {s.name for s in TERMINAL}
        if running and wait == 0:
            response.status_code = 202
            return JobResult(job_id=job_id, kind=status.kind, status=status.status)
        try:
            result = await asyncio.wait_for(handle.result(), timeout=wait or None)
        except TimeoutError:
            response.status_code = 202
            return JobResult(job_id=job_id, kind=status.kind, status="RUNNING")
        except WorkflowFailureError as err:
            final = await describe_job(client, job_id)
            return JobResult(
                job_id=job_id, kind=status.kind, status=final.status, error=_failure_text(err)
            )
        payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        return JobResult(
            job_id=job_id,
            kind=status.kind,
            status="COMPLETED",
            result=payload,
            links=links_in(payload),
        )

    @app.post("/jobs/{job_id}/cancel", tags=["jobs"], dependencies=auth, status_code=202)
    async def cancel_job(job_id: str) -> dict[str, str]:
        client = await temporal.get()
        status = await describe_job(client, job_id)
        if status.status != "RUNNING":
            raise HTTPException(409, f"job {job_id} is {status.status}, nothing to cancel")
        await client.get_workflow_handle(job_id).cancel(rpc_timeout=_rpc_timeout())
        return {"job_id": job_id, "status": "CANCEL_REQUESTED"}

    @app.put("/uploads/{name}", tags=["artifacts"], dependencies=auth, status_code=201)
    async def upload(name: str, request: Request) -> dict[str, str]:
        """Upload an input file (a large script, STEP/STL geometry); pass the URI in a job."""
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_UPLOAD:
                raise HTTPException(413, f"upload larger than {MAX_UPLOAD // 2**20} MiB")
        uri = store.put_upload(name, bytes(data))
        return {"uri": uri, "url": links_in(uri)[uri]}

    @app.get("/artifacts/{path:path}", tags=["artifacts"], dependencies=auth)
    async def artifact(path: str) -> FileResponse:
        file = store.path_for(SCHEME + path)
        if not file.is_file():
            raise HTTPException(404, f"no artifact {path}")
        media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        return FileResponse(file, media_type=media_type)

    return app


def _rpc_timeout() -> timedelta:
    return timedelta(seconds=RPC_TIMEOUT_S)


def _failure_text(err: WorkflowFailureError) -> str:
    cause = err.cause
    if isinstance(cause, CancelledError):
        return "cancelled"
    if isinstance(cause, TerminatedError):
        return f"terminated: {cause.message}"
    if isinstance(cause, TemporalTimeoutError):
        return "workflow timed out"
    parts = []
    while cause is not None:
        parts.append(getattr(cause, "message", str(cause)))
        cause = cause.__cause__
    return ": ".join(p for p in parts if p) or str(err)
