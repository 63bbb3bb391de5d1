"""Steering and watching running jobs: signals, queries and updates, derived from what each
kind declares (`JobKind.signals/queries/updates`).

Every declared name gets its own route with the declared body and response in OpenAPI
(`POST /jobs/{job_id}/signals/pause`, …); a catch-all per family answers any other name with
404 and the names the job's kind does have. A job that has ended answers 409.

No `from __future__ import annotations` here on purpose: route types are factory variables.
"""

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, HTTPException
from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)

from shopfloor.controller.deps import AUTH, RPC_TIMEOUT, ClientDep
from shopfloor.failures import root_message
from shopfloor.jobstate import describe_job, is_terminal
from shopfloor.registry import JobKind, Query, Signal, Update, kind_for_workflow_type

Declaration = Signal | Query | Update
D = TypeVar("D", Signal, Query, Update)
OptionalBody = Annotated[Any, Body()]
# Each family of declarations: its `JobKind` field (and URL segment), and one of it.
_FAMILY: dict[type[Declaration], tuple[str, str]] = {
    Signal: ("signals", "signal"),
    Query: ("queries", "query"),
    Update: ("updates", "update"),
}


class SignalSent(BaseModel):
    job_id: str
    signal: str
    status: str = "SENT"


async def _target(
    client: Client, job_id: str, family: type[D], name: str
) -> tuple[D, WorkflowHandle[Any, Any]]:
    """The declaration `name` of the job's kind, or the 404/409 that explains why not."""
    status = await describe_job(client, job_id, with_progress=False)
    kind = kind_for_workflow_type(status.workflow_type)
    plural, singular = _FAMILY[family]
    declared: Sequence[D] = getattr(kind, plural) if kind else ()
    decl = next((d for d in declared if d.name == name), None)
    if decl is None:
        what = f"{kind.name} jobs" if kind else f"workflows of type {status.workflow_type}"
        raise HTTPException(
            404,
            f"{what} have no {singular} {name!r}; they have: {sorted(d.name for d in declared)}",
        )
    if is_terminal(status.status):
        raise HTTPException(409, f"job {job_id} is {status.status}: {plural} need a running job")
    return decl, client.get_workflow_handle(job_id)


def _body(decl: Signal | Update, body: Any) -> Any:
    """The body as the declared model (routes shared by kinds with different models, and the
    catch-all, receive it untyped)."""
    if decl.model is None:
        return None
    if isinstance(body, decl.model):
        return body
    raw = body.model_dump(mode="json") if isinstance(body, BaseModel) else (body or {})
    try:
        return decl.model.model_validate(raw)
    except ValidationError as err:
        raise HTTPException(
            422, err.errors(include_url=False, include_input=False, include_context=False)
        ) from None


async def send_signal(client: Client, job_id: str, name: str, body: Any) -> SignalSent:
    decl, handle = await _target(client, job_id, Signal, name)
    arg = _body(decl, body)
    args = [] if arg is None else [arg]
    await handle.signal(name, *args, rpc_timeout=RPC_TIMEOUT)
    return SignalSent(job_id=job_id, signal=name)


async def run_query(client: Client, job_id: str, name: str) -> Any:
    decl, handle = await _target(client, job_id, Query, name)
    try:
        return await handle.query(name, result_type=decl.result, rpc_timeout=RPC_TIMEOUT)
    except WorkflowQueryFailedError as err:
        raise HTTPException(502, f"job {job_id} could not answer {name!r}: {err}") from None


async def run_update(client: Client, job_id: str, name: str, body: Any) -> Any:
    decl, handle = await _target(client, job_id, Update, name)
    arg = _body(decl, body)
    args = [] if arg is None else [arg]
    try:
        return await handle.execute_update(
            name, *args, result_type=decl.result, rpc_timeout=RPC_TIMEOUT
        )
    except WorkflowUpdateFailedError as err:
        raise HTTPException(422, f"update {name!r} rejected: {root_message(err)}") from None


def _one_type(types: set[Any]) -> Any:
    """The one type all kinds agree on, else Any (validated per kind at request time)."""
    return next(iter(types)) if len(types) == 1 else Any


def _declared(kinds: Sequence[JobKind], family: type[D]) -> Iterator[tuple[str, list[D], str]]:
    """Each name the kinds declare in `family`: its declarations (one per kind that has it)
    and the description of its route."""
    plural, singular = _FAMILY[family]
    found: dict[str, list[D]] = defaultdict(list)
    for kind in kinds:
        for decl in getattr(kind, plural):
            found[decl.name].append(decl)
    for name, decls in found.items():
        offered_by = ", ".join(k.name for k in kinds if getattr(k, singular)(name))
        yield name, decls, _describe(decls, offered_by)


def _describe(decls: Sequence[Declaration], kinds_with: str) -> str:
    text = next((d.description for d in decls if d.description), "")
    return f"{text}\n\nOffered by: {kinds_with}.".strip()


def _signal_route(router: APIRouter, name: str, decls: list[Signal], doc: str) -> None:
    model = _one_type({d.model for d in decls})
    path = f"/jobs/{{job_id}}/signals/{name}"
    summary = f"Send the {name!r} signal"
    if model is None:

        @router.post(path, status_code=202, summary=summary, description=doc)
        async def send_bare(job_id: str, client: ClientDep) -> SignalSent:
            return await send_signal(client, job_id, name, None)

    else:

        @router.post(path, status_code=202, summary=summary, description=doc)
        async def send(
            job_id: str,
            body: model,  # type: ignore[valid-type]  # FastAPI: the body model, known at run time
            client: ClientDep,
        ) -> SignalSent:
            return await send_signal(client, job_id, name, body)


def _query_route(router: APIRouter, name: str, decls: list[Query], doc: str) -> None:
    result = _one_type({d.result for d in decls})

    @router.get(
        f"/jobs/{{job_id}}/queries/{name}",
        response_model=result,
        summary=f"Ask {name!r}",
        description=doc,
    )
    async def ask(job_id: str, client: ClientDep) -> Any:
        return await run_query(client, job_id, name)


def _update_route(router: APIRouter, name: str, decls: list[Update], doc: str) -> None:
    model = _one_type({d.model for d in decls})
    result = _one_type({d.result for d in decls})
    path = f"/jobs/{{job_id}}/updates/{name}"
    summary = f"Apply the {name!r} update"
    if model is None:

        @router.post(path, response_model=result, summary=summary, description=doc)
        async def apply_bare(job_id: str, client: ClientDep) -> Any:
            return await run_update(client, job_id, name, None)

    else:

        @router.post(path, response_model=result, summary=summary, description=doc)
        async def apply(
            job_id: str,
            body: model,  # type: ignore[valid-type]  # FastAPI: the body model, known at run time
            client: ClientDep,
        ) -> Any:
            return await run_update(client, job_id, name, body)


def interaction_router(kinds: Sequence[JobKind]) -> APIRouter:
    router = APIRouter(tags=["steer"], dependencies=AUTH)
    for name, signals, doc in _declared(kinds, Signal):
        _signal_route(router, name, signals, doc)
    for name, queries, doc in _declared(kinds, Query):
        _query_route(router, name, queries, doc)
    for name, updates, doc in _declared(kinds, Update):
        _update_route(router, name, updates, doc)

    # Any other name: the job's kind does not have it → 404 naming those it has.
    @router.post("/jobs/{job_id}/signals/{name}", status_code=202, include_in_schema=False)
    async def other_signal(
        job_id: str, name: str, client: ClientDep, body: OptionalBody = None
    ) -> SignalSent:
        return await send_signal(client, job_id, name, body)

    @router.get("/jobs/{job_id}/queries/{name}", include_in_schema=False)
    async def other_query(job_id: str, name: str, client: ClientDep) -> Any:
        return await run_query(client, job_id, name)

    @router.post("/jobs/{job_id}/updates/{name}", include_in_schema=False)
    async def other_update(
        job_id: str, name: str, client: ClientDep, body: OptionalBody = None
    ) -> Any:
        return await run_update(client, job_id, name, body)

    return router
