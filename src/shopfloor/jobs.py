"""Conventions every job kind shares: retry policy, heartbeat timeouts, input errors, and
the standard `progress` query.

Imported by workflows, so it must stay deterministic and light (no I/O at import time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from shopfloor.inputs import describe_errors
from shopfloor.progress import WorkflowProgress
from shopfloor.registry import PROGRESS_QUERY

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

# A worker that dies is noticed after this long without a heartbeat; its activity is then
# retried on another worker. Activities heartbeat every PROGRESS_EVERY_S.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
PROGRESS_EVERY_S = 2.0

INVALID_INPUT = "InvalidJobInput"

# Infrastructure failures (lost worker, store hiccup) are retried; what the user sent is not.
JOB_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=[INVALID_INPUT],
)


def heartbeat_progress(progress: Any) -> None:
    """The sandbox's progress callback for activities: progress becomes heartbeat details,
    which `shopfloor status` and GET /jobs/<id> show."""
    activity.heartbeat(progress.as_dict())


# How every job activity reports sandbox progress (keyword options of the sandbox launchers).
JOB_PROGRESS = {"on_progress": heartbeat_progress, "progress_every": PROGRESS_EVERY_S}


def ensure_cancel_was_requested() -> None:
    """Call when a job's processes were killed because its activity was cancelled.

    Only a cancel the user asked for may end the job with a `cancelled` result. Any other
    cancellation — the worker shutting down, a lost heartbeat — must record nothing: the
    activity fails (retryably) and the job runs again on another worker.
    """
    details = activity.cancellation_details()
    if details is None or not details.cancel_requested:
        raise asyncio.CancelledError("worker shutting down: the job will run again elsewhere")


def job_input(model: type[M], raw: Any) -> M:
    """Every workflow decodes its own input (its `run` takes `Any`): input of the wrong shape
    from any client — a bare string, an unknown field, a missing one — then fails the job at
    once, naming the field, instead of failing its first workflow task for ever."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise invalid_input(f"invalid {model.__name__}: {describe_errors(err)}") from None


def invalid_input(message: str) -> ApplicationError:
    """An error a retry cannot fix: the job fails at once with this message."""
    return ApplicationError(message, type=INVALID_INPUT, non_retryable=True)


async def run_job_activity(
    activity_name: str,
    arg: Any,
    *,
    result_type: type[R],
    start_to_close: timedelta,
    heartbeat_timeout: timedelta = HEARTBEAT_TIMEOUT,
    cancelled: Callable[[R], bool] | None = None,
) -> R:
    """Runs a job's main activity, named as its workers register it (so workflows never import
    activity code).

    On a cancel request the activity kills the job's processes, stores what it produced and
    returns a result saying so; the workflow waits for that result (it lands in history, where
    `GET /jobs/<id>/result` finds it), then ends CANCELED — the status every client (the
    `temporal` CLI, the UI, other SDKs) shows for a cancelled job."""
    result = await workflow.execute_activity(
        activity_name,
        arg,
        result_type=result_type,
        start_to_close_timeout=start_to_close,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=JOB_RETRY_POLICY,
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )
    if cancelled is not None and cancelled(result):
        raise asyncio.CancelledError("cancelled on request")
    return result


class ReportsProgress:
    """Base for workflows that offer the standard `progress` query. `shopfloor status` and the
    controller prefer it to activity heartbeats, so a job shows where it is while it sleeps,
    waits for a signal or runs a child workflow. Declare `PROGRESS` in the kind's queries."""

    _progress: WorkflowProgress | None = None

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> WorkflowProgress:
        return self._progress or WorkflowProgress(status="running")

    def report(self, status: str, *, step: str | None = None, **details: Any) -> None:
        self._progress = WorkflowProgress(status=status, step=step, details=details)

    async def sleep(
        self,
        duration: timedelta,
        *,
        purpose: str,
        step: str | None = None,
        until: Callable[[], bool] | None = None,
    ) -> bool:
        """A durable timer that says what it waits for and until when. With `until`, a signal
        or update can end the wait early: returns True when it did."""
        wake_at = workflow.now() + duration
        self._progress = WorkflowProgress(
            status=f"waiting until {wake_at:%Y-%m-%d %H:%M:%S} UTC {purpose}".rstrip(),
            step=step,
            wake_at=wake_at,
        )
        if until is None:
            await workflow.sleep(duration)
            return False
        try:
            await workflow.wait_condition(until, timeout=duration)
            return True
        except TimeoutError:
            return False

    async def wait_for(
        self, condition: Callable[[], bool], *, purpose: str, step: str | None = None
    ) -> None:
        """Waits for `condition()` to become true (a signal or update arriving), saying so."""
        self._progress = WorkflowProgress(status=f"waiting {purpose}".rstrip(), step=step)
        await workflow.wait_condition(condition)
