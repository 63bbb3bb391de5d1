"""What the dashboard shows, read from Temporal on each request (the controller keeps nothing):
a page of the jobs list, one job as its kind shows it, the schedules and the kill switch."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from jinja2 import BaseLoader, Environment, FileSystemLoader, TemplateNotFound
from pydantic import BaseModel
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client, WorkflowFailureError

from shopfloor.controller.links import links_in
from shopfloor.failures import failure_details, job_failure_message
from shopfloor.jobstate import (
    JobStatus,
    describe_job,
    is_terminal,
    last_activity_result,
    recorded_outcome,
)
from shopfloor.outcome import outcome_name
from shopfloor.registry import JobKind, kind_for_workflow_type, kinds, load
from shopfloor.settings import Settings
from shopfloor.visibility import MAX_PREFIX_CHARS, execution_status, jobs_query

log = logging.getLogger("shopfloor.dashboard")
PAGE_SIZE = 50
RPC = timedelta(seconds=10)
QUERY_TIMEOUT = timedelta(seconds=2)


class BadFilter(ValueError):
    """A filter the jobs list cannot apply (unknown kind or status, a bad page token)."""


# -- the jobs list -------------------------------------------------------------------------------


@dataclass
class JobRow:
    job_id: str
    run_id: str
    kind: str | None
    workflow_type: str
    status: str
    started_at: Any
    closed_at: Any
    progress: str = ""
    outcome: str = ""  # passed, failed, cancelled, timed_out, running: the row's colour


@dataclass
class JobsPage:
    rows: list[JobRow]
    next_token: str | None
    query: str


@dataclass
class Filters:
    kind: str = ""
    status: str = ""
    q: str = ""
    page: str = ""
    outcome: str = ""

    def params(self, **override: str) -> str:
        values = {
            "kind": self.kind,
            "status": self.status,
            "outcome": self.outcome,
            "q": self.q,
            "page": self.page,
        }
        values.update(override)
        return "&".join(f"{k}={quote(v)}" for k, v in values.items() if v)


def list_query(filters: Filters) -> str:
    registry = kinds()
    if filters.kind and filters.kind not in registry:
        raise BadFilter(f"unknown kind {filters.kind!r}; known: {', '.join(sorted(registry))}")
    chosen = [registry[filters.kind]] if filters.kind else list(registry.values())
    types = [t for k in chosen for t in (k.workflow_type, *k.other_workflow_types)]
    wanted = execution_status(filters.status) if filters.status else None
    if filters.status and wanted is None:
        raise BadFilter(f"unknown status {filters.status[:40]!r}")
    outcome = outcome_name(filters.outcome) if filters.outcome else None
    if filters.outcome and outcome is None:
        raise BadFilter(f"unknown outcome {filters.outcome[:40]!r}")
    text = filters.q.strip()
    if len(text) > MAX_PREFIX_CHARS:
        raise BadFilter(f"search text longer than {MAX_PREFIX_CHARS} characters")
    return jobs_query(types, status=wanted, id_prefix=text, outcome=outcome)


async def jobs_page(client: Client, filters: Filters) -> JobsPage:
    """One page of jobs (Temporal's own paging: the page token goes in the URL)."""
    query = list_query(filters)
    token = None
    if filters.page:
        try:
            token = base64.urlsafe_b64decode(filters.page.encode())
        except (binascii.Error, ValueError):
            raise BadFilter("bad page token") from None
    found = client.list_workflows(
        query, page_size=PAGE_SIZE, next_page_token=token, rpc_timeout=RPC
    )
    await found.fetch_next_page()
    rows = []
    for wf in found.current_page or []:
        kind = kind_for_workflow_type(wf.workflow_type)
        rows.append(
            JobRow(
                job_id=wf.id,
                run_id=wf.run_id,
                kind=kind.name if kind else None,
                workflow_type=wf.workflow_type,
                status=wf.status.name if wf.status else "UNKNOWN",
                started_at=wf.start_time,
                closed_at=wf.close_time,
                outcome=recorded_outcome(
                    wf.typed_search_attributes, wf.status.name if wf.status else "UNKNOWN"
                ),
            )
        )
    next_token = found.next_page_token
    return JobsPage(
        rows=rows,
        next_token=base64.urlsafe_b64encode(next_token).decode() if next_token else None,
        query=query,
    )


async def add_progress(client: Client, rows: list[JobRow], *, limit: int = 8) -> None:
    """Fills in `progress` of running rows: the job's own report, else its heartbeats."""
    gate = asyncio.Semaphore(limit)

    async def one(row: JobRow) -> None:
        async with gate:
            try:
                status = await asyncio.wait_for(describe_job(client, row.job_id), 5)
            except Exception as err:  # noqa: BLE001 - a row without progress is still a row
                log.debug("progress of %s: %s", row.job_id, err)
                return
            row.status = status.status
            row.progress = progress_line(status)

    await asyncio.gather(*(one(r) for r in rows if r.status == "RUNNING"))


def progress_line(status: JobStatus) -> str:
    if status.workflow_progress is not None:
        return status.workflow_progress.status
    for pending in status.progress:
        details = pending.details
        if isinstance(details, dict):
            parts = []
            if "elapsed_s" in details:
                parts.append(f"{details['elapsed_s']:.0f} s")
            stage = details.get("stage")
            if isinstance(stage, dict) and stage:
                parts.append(", ".join(f"{k} {v}" for k, v in list(stage.items())[:3]))
            if details.get("last_line"):
                parts.append(str(details["last_line"])[:120])
            if parts:
                return " · ".join(parts)
        return f"{pending.activity}: {pending.state.lower()} (attempt {pending.attempt})"
    return ""


# -- one job -----------------------------------------------------------------------------------


@dataclass
class JobView:
    status: JobStatus
    kind: JobKind | None
    terminal: bool
    result: Any = None
    error: str | None = None
    live: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # artifact:// URI → link
    input: Any = None

    @property
    def template(self) -> str:
        """The kind's own page (see `KindPages`), or the generic one."""
        if self.kind is None or self.kind.presentation.page is None:
            return "kinds/other.html"
        return f"{KIND_PAGE}{self.kind.name}.html"


# Template names of the kinds' own pages: `kind/<kind name>.html`.
KIND_PAGE = "kind/"


class KindPages(BaseLoader):
    """Loads `kind/<name>.html` from the page file the kind declares, in its own folder."""

    def get_source(self, environment: Environment, template: str) -> Any:
        name = template.removeprefix(KIND_PAGE).removesuffix(".html")
        kind = kinds().get(name) if template.startswith(KIND_PAGE) else None
        page = kind.presentation.page if kind is not None else None
        if page is None:
            raise TemplateNotFound(template)
        return FileSystemLoader(page.parent).get_source(environment, page.name)


def page_context(settings: Settings, view: JobView) -> dict[str, Any]:
    """What a job's page is rendered with: the view, and what its kind adds."""
    context: dict[str, Any] = {"view": view, "job_id": view.status.job_id}
    builder = view.kind.presentation.page_context if view.kind else None
    if builder is not None:
        context.update(load(builder)(view, settings))
    return context


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _links(value: Any, settings: Settings) -> dict[str, str]:
    # Signed (when a token is set) so a <video> or a new tab opens it.
    return {uri: _relative(url, settings) for uri, url in links_in(value, settings).items()}


def _relative(url: str, settings: Settings) -> str:
    base = settings.public_controller_url
    return url[len(base) :] if url.startswith(base) else url


async def job_view(client: Client, settings: Settings, job_id: str) -> JobView:
    status = await describe_job(client, job_id)
    kind = kind_for_workflow_type(status.workflow_type)
    view = JobView(status=status, kind=kind, terminal=is_terminal(status.status))
    handle = client.get_workflow_handle(job_id, result_type=kind.result_model if kind else None)
    if view.terminal:
        try:
            view.result = _dump(await asyncio.wait_for(handle.result(), 10))
        except WorkflowFailureError as err:
            view.error, view.result = job_failure_message(err), failure_details(err)
            if view.result is None and status.status == "CANCELED":
                view.result = await last_activity_result(client, job_id)
        except TimeoutError:
            view.error = "the result could not be read in time"
    elif kind is not None:
        view.live = await _live(client, kind, job_id)
    if kind is not None and kind.presentation.page_input:
        view.input = await first_input(client, settings, job_id)
    view.links = _links(view.result, settings) | _links(view.live, settings)
    return view


async def _live(client: Client, kind: JobKind, job_id: str) -> dict[str, Any]:
    """What a running job of this kind answers to the query its page shows."""
    name = kind.presentation.live_query
    query = kind.query(name) if name else None
    if name is None or query is None:
        return {}
    try:
        answer = await client.get_workflow_handle(job_id).query(
            name, result_type=query.result, rpc_timeout=QUERY_TIMEOUT
        )
    except Exception as err:  # noqa: BLE001 - no worker right now: say so, show the rest
        return {"unanswered": f"the job did not answer its `{name}` query: {err}"}
    return {name: _dump(answer)}


async def first_input(client: Client, settings: Settings, job_id: str) -> Any:
    """The job's input, from the first event of its history (one small read)."""
    try:
        response = await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=settings.namespace,
                execution=WorkflowExecution(workflow_id=job_id),
                maximum_page_size=1,
            ),
            timeout=RPC,
        )
        started = response.history.events[0].workflow_execution_started_event_attributes
        payloads = started.input.payloads
        if not payloads:
            return None
        return (await client.data_converter.decode(payloads))[0]
    except Exception as err:  # noqa: BLE001 - the page shows the job without its definition
        log.info("input of %s not read: %s", job_id, err)
        return None


def temporal_ui_link(settings: Settings, job_id: str, run_id: str | None = None) -> str | None:
    base = settings.temporal_ui
    if base is None:
        return None
    url = f"{base}/namespaces/{quote(settings.namespace)}/workflows/{quote(job_id, safe='')}"
    return f"{url}/{quote(run_id)}/history" if run_id else url
