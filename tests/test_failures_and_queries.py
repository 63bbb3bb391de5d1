"""The one failure-cause helper and the one visibility-query builder (issue 21)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.api.failure.v1 import Failure
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    ServerError,
    TerminatedError,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from shopfloor.controller.dashboard.views import Filters, list_query
from shopfloor.failures import (
    MAX_MESSAGE_CHARS,
    causes,
    failure_details,
    failure_message,
    job_failure_message,
    proto_failure_message,
    root_message,
    shorten,
)
from shopfloor.visibility import execution_status, jobs_query, quoted


def _activity_failed(cause: BaseException) -> ActivityError:
    err = ActivityError(
        "Activity task failed",
        scheduled_event_id=5,
        started_event_id=6,
        identity="w",
        activity_type="run_script",
        activity_id="1",
        retry_state=RetryState.MAXIMUM_ATTEMPTS_REACHED,
    )
    err.__cause__ = cause
    return err


def _job_failed(cause: BaseException) -> WorkflowFailureError:
    err = WorkflowFailureError(cause=cause)
    err.__cause__ = cause
    return err


def _chain(*messages: str) -> ApplicationError:
    """ApplicationErrors, the first wrapping the next."""
    errors = [ApplicationError(m, "detail" if i == 0 else None) for i, m in enumerate(messages)]
    for outer, inner in zip(errors, errors[1:], strict=False):
        outer.__cause__ = inner
    return errors[0]


def test_the_message_leaves_out_wrappers_and_repeats() -> None:
    err = _job_failed(_activity_failed(_chain("step failed", "disk full", "disk full")))
    assert len(causes(err)) == 5
    assert failure_message(err) == "step failed: disk full"
    assert root_message(err) == "disk full"
    assert failure_details(err) == "detail"
    assert job_failure_message(err) == "step failed: disk full"


def test_a_long_chain_gives_way_to_its_root_cause() -> None:
    root = "the real error: " + "x" * 100
    err = _activity_failed(_chain("a" * 300, "b" * 300, root))
    text = failure_message(err, limit=200)
    assert len(text) <= 200
    assert text.endswith(root) and text.startswith("…")
    # A root longer than the limit is cut in the middle: both ends stay.
    huge = failure_message(_chain("z" * 50 + "y" * 5000 + "END"), limit=100)
    assert len(huge) <= 100 and huge.startswith("z") and huge.endswith("END")
    assert shorten("short") == "short"


def test_how_a_job_ended_is_said_plainly() -> None:
    assert job_failure_message(_job_failed(CancelledError("Workflow cancelled"))) == "cancelled"
    terminated = job_failure_message(_job_failed(TerminatedError("by ops")))
    assert terminated == "terminated: by ops"


def test_values_are_quoted_and_escaped() -> None:
    assert quoted("it's") == "'it\\'s'"
    assert quoted("a\\'") == "'a\\\\\\''"
    query = jobs_query(["T'1", "T2"], status="Running", id_prefix="x' OR WorkflowId != '")
    assert query == (
        "WorkflowType IN ('T\\'1', 'T2') AND ExecutionStatus = 'Running'"
        " AND WorkflowId STARTS_WITH 'x\\' OR WorkflowId != \\''"
    )
    assert execution_status("timed-out") == "TimedOut"
    assert execution_status("soon") is None


def test_the_dashboard_and_the_api_build_the_same_query() -> None:
    query = list_query(Filters(kind="script", status="running", q="job-'1"))
    assert query == (
        "WorkflowType IN ('ScriptExecutionWorkflow') AND ExecutionStatus = 'Running'"
        " AND WorkflowId STARTS_WITH 'job-\\'1'"
    )


@activity.defn(name="fails_with_a_huge_message")
async def fails_with_a_huge_message() -> None:
    raise RuntimeError("disk full: " + "x" * 3_000_000 + " (while writing out.bin)")


@workflow.defn(name="HugeFailure", sandboxed=False)
class HugeFailure:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            "fails_with_a_huge_message",
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def test_a_failure_too_large_for_the_server_still_says_what_failed(
    env: WorkflowEnvironment,
) -> None:
    """The server keeps such a failure as "Failure exceeds size limit." wrapping a cut copy:
    what a job's status and result say is the real error, shortened."""
    queue = f"huge-failure-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[HugeFailure],
        activities=[fails_with_a_huge_message],
    ):
        with pytest.raises(WorkflowFailureError) as failed:
            await env.client.execute_workflow("HugeFailure", id=queue, task_queue=queue)
    text = job_failure_message(failed.value)
    assert text.startswith("disk full: xxx") and "exceeds size limit" not in text
    assert len(text) <= MAX_MESSAGE_CHARS


def test_the_size_limit_wrapper_gives_way_to_its_cause() -> None:
    server = ServerError("Failure exceeds size limit.", non_retryable=True)
    server.__cause__ = ApplicationError("disk full")
    assert failure_message(_job_failed(_activity_failed(server))) == "disk full"
    # Alone (nothing under it), it is all there is to say.
    alone = ServerError("Failure exceeds size limit.", non_retryable=True)
    assert failure_message(_job_failed(_activity_failed(alone))) == "Failure exceeds size limit."


def test_an_activitys_last_failure_as_the_server_keeps_it() -> None:
    """`shopfloor status` shows a pending activity's last failure from the server's copy."""
    failure = Failure(message="Failure exceeds size limit.", cause=Failure(message="disk full"))
    assert proto_failure_message(failure) == "disk full"
    assert proto_failure_message(Failure()) == ""
