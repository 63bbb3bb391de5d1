"""One outcome model for every kind (docs/outcomes.md).

A job's outcome is `running`, then one of `passed`, `failed`, `cancelled`, `timed_out`. The
kind decides it from its result (`JobKind.outcome`: a script's exit code, a simulation's
verdict, an agent goal's status); this module only carries the decision out, naming no kind:

- `OutcomeInterceptor` (every workflow a shopfloor worker runs) upserts the search
  attributes `ShopfloorKind` and `ShopfloorOutcome=running` when a job starts, and the final
  outcome before it ends;
- a job whose kind says `failed` or `timed_out` ends FAILED, with a non-retryable
  ApplicationError whose `type` names the outcome (`JobFailed`, `JobTimedOut`) and whose
  `details[0]` is the kind's whole result: `describe().status` tells the truth, and nothing
  of the result is lost;
- a job whose kind says `cancelled` ends CANCELED (a Temporal cancel request, or a kind's
  own cancel such as the agent's `cancel` signal: the job then asks Temporal to cancel it).

Runs begun before this (no `shopfloor-outcome` patch marker in their history) replay as
they ran: no attributes, the result returned as it was.

Imported by workflows and by the controller and CLI: light, deterministic.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import (
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)
from temporalio.exceptions import (
    TimeoutError as TemporalTimeoutError,
)
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from shopfloor.failures import causes

if TYPE_CHECKING:
    from temporalio.client import Client

    from shopfloor.registry import JobKind

RUNNING = "running"
PASSED = "passed"
FAILED = "failed"
CANCELLED = "cancelled"
TIMED_OUT = "timed_out"
OUTCOMES = (RUNNING, PASSED, FAILED, CANCELLED, TIMED_OUT)
FINAL = (PASSED, FAILED, CANCELLED, TIMED_OUT)

OUTCOME_ATTRIBUTE = "ShopfloorOutcome"
KIND_ATTRIBUTE = "ShopfloorKind"
OUTCOME_KEY = SearchAttributeKey.for_keyword(OUTCOME_ATTRIBUTE)
KIND_KEY = SearchAttributeKey.for_keyword(KIND_ATTRIBUTE)
# name → Temporal's type name, as `temporal operator search-attribute create` takes them.
SEARCH_ATTRIBUTES = {OUTCOME_ATTRIBUTE: "Keyword", KIND_ATTRIBUTE: "Keyword"}
SETUP_COMMAND = "shopfloor setup-search-attributes"

# The failure a job that did not pass ends with (its type names the outcome).
JOB_FAILED = "JobFailed"
JOB_TIMED_OUT = "JobTimedOut"
ERROR_TYPES = {FAILED: JOB_FAILED, TIMED_OUT: JOB_TIMED_OUT}
OUTCOME_PATCH = "shopfloor-outcome"


def outcome_name(text: str) -> str | None:
    """An outcome as users write it (`Failed`, `timed-out`), else None."""
    name = text.strip().lower().replace("-", "_")
    if name == "canceled":
        name = CANCELLED
    return name if name in OUTCOMES else None


def outcome_of_status(status: str) -> str:
    """What a job's outcome is when only its Temporal status is known (a run begun before
    outcomes were recorded, or one that was terminated): never `passed` for a COMPLETED job
    whose kind did not say so — that is what `outcome_of_result` is for."""
    return {
        "RUNNING": RUNNING,
        "FAILED": FAILED,
        "CANCELED": CANCELLED,
        "TERMINATED": CANCELLED,
        "TIMED_OUT": TIMED_OUT,
    }.get(status, PASSED if status == "COMPLETED" else FAILED)


def outcome_of_result(kind: JobKind | None, result: Any) -> str:
    """The kind's decision on a result (as JSON data); `passed` for kinds without one."""
    if kind is None or kind.outcome is None or not isinstance(result, dict):
        return PASSED
    return kind.outcome(result)


def outcome_of_failure(err: BaseException) -> str:
    """A job's outcome from why it ended with an exception."""
    if is_cancelled_exception(err):
        return CANCELLED
    for link in causes(err):
        if isinstance(link, ApplicationError):
            if link.type == JOB_TIMED_OUT:
                return TIMED_OUT
            if link.type == JOB_FAILED:
                return FAILED
        if isinstance(link, TemporalTimeoutError) and not isinstance(err, ChildWorkflowError):
            # A workflow's own run timeout, or an activity of it that timed out for good.
            return TIMED_OUT
    return FAILED


def job_failed(outcome: str, result: Any) -> ApplicationError:
    """The failure a job ends with when its kind says it did not pass."""
    why = _why(result)
    words = "timed out" if outcome == TIMED_OUT else "failed"
    return ApplicationError(
        f"job {words}" + (f": {why}" if why else ""),
        result,
        type=ERROR_TYPES[outcome],
        non_retryable=True,
    )


def _why(result: Any) -> str:
    if not isinstance(result, dict):
        return ""
    for key in ("reason", "error", "killed_reason", "message"):
        value = result.get(key)
        if value:
            return str(value)[:500]
    if result.get("exit_code") not in (None, 0):
        return f"exit code {result['exit_code']}"
    return ""


def result_of_failure(details: Any) -> Any:
    """The kind's result a `JobFailed`/`JobTimedOut` failure carries, else None."""
    return details if isinstance(details, dict) else None


# -- in the workflow --------------------------------------------------------------------------


def _upsert(kind: str, outcome: str) -> None:
    workflow.upsert_search_attributes([KIND_KEY.value_set(kind), OUTCOME_KEY.value_set(outcome)])


def _as_data(result: Any) -> Any:
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


def _cancel_was_requested() -> bool:
    """Whether Temporal asked this run to cancel (the workflow may have caught it to store
    its artifacts first): the run's main task then still counts the request."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _Outcome(WorkflowInboundInterceptor):
    # Workflow type → its kind: read from the registry outside the workflow sandbox.
    kinds: ClassVar[dict[str, JobKind]] = {}

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        kind = self.kinds.get(workflow.info().workflow_type)
        if kind is None or not workflow.patched(OUTCOME_PATCH):
            return await super().execute_workflow(input)
        _upsert(kind.name, RUNNING)
        try:
            result = await super().execute_workflow(input)
        except workflow.ContinueAsNewError:
            raise  # the next run goes on: still running
        except (Exception, asyncio.CancelledError) as err:
            # (Not the SDK's own BaseExceptions: a run evicted from the cache ends nothing.)
            _upsert(kind.name, outcome_of_failure(err))
            raise
        data = _as_data(result)
        outcome = outcome_of_result(kind, data)
        _upsert(kind.name, outcome)
        if outcome in ERROR_TYPES:
            raise job_failed(outcome, data)
        if outcome == CANCELLED:
            if not _cancel_was_requested():
                # Cancelled by the kind's own means (a signal): ask Temporal, so that the
                # job ends CANCELED as any other cancelled job does.
                await workflow.get_external_workflow_handle(workflow.info().workflow_id).cancel()
                await workflow.wait_condition(lambda: False)
            raise asyncio.CancelledError("cancelled on request")
        return result


class OutcomeInterceptor(Interceptor):
    """Records every job's outcome (see the module's doc). Made in the worker process, where
    it reads the registry; the workflow side then only looks its kind up."""

    def __init__(self) -> None:
        from shopfloor.registry import kinds

        self._kinds = {
            workflow_type: kind
            for kind in kinds().values()
            for workflow_type in (kind.workflow_type, *kind.other_workflow_types)
        }

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return type("_KindOutcome", (_Outcome,), {"kinds": self._kinds})


# -- on a server --------------------------------------------------------------------------------


class SearchAttributesMissing(RuntimeError):
    pass


async def missing_search_attributes(client: Client) -> list[str]:
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    known = set(response.custom_attributes) | set(response.system_attributes)
    return [name for name in SEARCH_ATTRIBUTES if name not in known]


async def can_record_outcomes(client: Client) -> bool:
    """Whether this server has the search attributes. The SDK's time-skipping test server has
    no operator service to ask (nor to register them with): False."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        return not await missing_search_attributes(client)
    except RPCError as err:
        if err.status == RPCStatusCode.UNIMPLEMENTED:
            return False
        raise


async def check_search_attributes(client: Client) -> None:
    """Raises SearchAttributesMissing, naming the command that registers them."""
    missing = await missing_search_attributes(client)
    if missing:
        create = " ".join(f"--name {n} --type {SEARCH_ATTRIBUTES[n]}" for n in missing)
        raise SearchAttributesMissing(
            f"the Temporal namespace {client.namespace!r} lacks the search attributes "
            f"{missing} that every job records its outcome in: run `{SETUP_COMMAND}` "
            f"(or `temporal operator search-attribute create --namespace {client.namespace} "
            f"{create}`) once, then start the worker again"
        )


async def create_search_attributes(client: Client) -> list[str]:
    """Registers the missing ones; returns their names."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    missing = await missing_search_attributes(client)
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={
                    n: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{SEARCH_ATTRIBUTES[n].upper()}")
                    for n in missing
                },
            )
        )
    return missing


def search_attribute_args() -> list[str]:
    """`temporal server start-dev` options that register them at start."""
    return [a for n, t in SEARCH_ATTRIBUTES.items() for a in ("--search-attribute", f"{n}={t}")]
