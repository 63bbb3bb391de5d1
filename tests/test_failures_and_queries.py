"""The one failure-cause helper and the one visibility-query builder (issue 21)."""

from __future__ import annotations

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TerminatedError,
)

from shopfloor.controller.dashboard.views import Filters, list_query
from shopfloor.failures import (
    causes,
    failure_details,
    failure_message,
    job_failure_message,
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
