"""Conventions every job kind shares: retry policy, heartbeat timeouts, input errors, and
the standard `progress` query.

Imported by workflows, so it must stay deterministic and light (no I/O at import time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeout

from shopfloor.contracts import ActivityStub
from shopfloor.inputs import describe_errors
from shopfloor.progress import WorkflowProgress
from shopfloor.registry import PROGRESS_QUERY, kind_for_workflow_type

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

# A worker that dies is noticed after this long without a heartbeat; its activity is then
# retried on another worker. Activities heartbeat every PROGRESS_EVERY_S.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
PROGRESS_EVERY_S = 2.0

INVALID_INPUT = "InvalidJobInput"

# Local-first runs of user code (kinds that declare `JobKind.local_first`): the activity starts
# as a local activity, in the worker that runs the workflow task, so a short run costs one
# workflow task and no activity dispatch. A run still going after the worker's hand-off budget
# (`SHOPFLOOR_HANDOFF_AFTER_S`) is kept running and the local activity fails with HANDED_OFF,
# naming a task queue only that worker polls; the same activity there adopts the run and
# heartbeats as every long job does.
LOCAL_FIRST_PATCH = "shopfloor-local-first"
HANDED_OFF = "HandedOff"
# Waiting for a free run slot, set-up and collection around the run's budget in the local
# attempt (the worker decides the budget; this only bounds a local attempt that hangs).
LOCAL_START_TO_CLOSE = timedelta(minutes=10)
# How long a handed-off activity may wait for its worker to poll: a worker that died after
# handing off took the run with it, and the job starts again on any worker.
HANDOFF_SCHEDULE_TO_START = timedelta(seconds=10)
# On hand-off queues only: kills a run handed over for an activity that never started (the
# job was cancelled first). Takes the activity's name.
DROP_HANDED_OVER = "shopfloor.drop_handed_over"

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


def ensure_cancel_was_requested() -> None:
    """Call when a job's processes were killed because its activity was cancelled.

    Only a cancel the user asked for may end the job with a `cancelled` result. Any other
    cancellation — the worker shutting down, a lost heartbeat — must record nothing: the
    activity fails (retryably) and the job runs again on another worker.
    """
    details = activity.cancellation_details()
    if details is None or not details.cancel_requested:
        raise asyncio.CancelledError("worker shutting down: the job will run again elsewhere")


def job_input(model: type[M], raw: Any = None) -> M:
    """Every workflow decodes its own input: its `run` takes the raw payload, with a default
    (`async def run(self, raw: Any = None)`), so that input of any shape from any client — none
    at all (`temporal workflow start` without `--input`, TypeScript `args: []`), `null`, `[]`,
    a bare string, an unknown field, a wrong type three levels down — fails the job at once,
    non-retryable, naming the field, instead of failing its first workflow task for ever
    (`run() missing 1 required positional argument`)."""
    if isinstance(raw, model):
        return raw
    if not isinstance(raw, dict):
        raise invalid_input(not_an_object(model, raw))
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise invalid_input(f"invalid {model.__name__}: {describe_errors(err)}") from None
    except (TypeError, AttributeError, KeyError) as err:
        # A validator that did not expect this type: still the input's fault, never a
        # workflow task that fails for ever.
        raise invalid_input(f"invalid {model.__name__}: {err}") from None


_JSON_TYPES = {list: "a JSON array", str: "a JSON string", bool: "true/false", int: "a number"}


def what_was_sent(raw: Any) -> str:
    return "no input (none, or null)" if raw is None else _JSON_TYPES.get(type(raw), "a number")


def not_an_object(model: type[BaseModel], raw: Any) -> str:
    """Why `raw` is no input for `model`: what was sent, and the fields it needs."""
    fields = {f.alias or name: f.is_required() for name, f in model.model_fields.items()}
    required = [name for name, needed in fields.items() if needed]
    needs = f"required: {', '.join(required)}" if required else f"fields: {', '.join(fields)}"
    got = what_was_sent(raw)
    who = f"{workflow.info().workflow_type} " if workflow.in_workflow() else ""
    return f"invalid {model.__name__}: {who}input must be one JSON object ({needs}), got {got}"


def invalid_input(message: str) -> ApplicationError:
    """An error a retry cannot fix: the job fails at once with this message."""
    return ApplicationError(message, type=INVALID_INPUT, non_retryable=True)


async def run_job_activity(
    stub: ActivityStub[Any, R],
    arg: Any,
    *,
    start_to_close: timedelta,
    heartbeat_timeout: timedelta = HEARTBEAT_TIMEOUT,
    cancelled: Callable[[R], bool] | None = None,
    restarted: Callable[[R, int], R] | None = None,
) -> R:
    """Runs a job's main activity, through its typed stub (`shopfloor.contracts`: the name its
    workers register and its result type, so workflows never import activity code).

    On a cancel request the activity kills the job's processes, stores what it produced and
    returns a result saying so; the workflow waits for that result (it lands in history, where
    `GET /jobs/<id>/result` finds it), then ends CANCELED — the status every client (the
    `temporal` CLI, the UI, other SDKs) shows for a cancelled job.

    Local-first when the workflow's kind declares it (`JobKind.local_first`: its activity runs
    user code through `usercode.run_user_code`, which knows how to hand a long run over; see
    LOCAL_FIRST_PATCH). Runs recorded before it replay as they ran: one regular activity.
    Should the worker a run was handed to be gone, the job starts again in an activity on the
    shared queue, whose attempts count from 1: `restarted` says so in its result, given the
    runs of the job's code before (`handed_off_runs`)."""
    activity_name, result_type = stub.name, stub.result
    call = _JobActivity(
        name=activity_name,
        arg=arg,
        result_type=result_type,
        start_to_close=start_to_close,
        heartbeat_timeout=heartbeat_timeout,
    )
    # The payload converter gives the stub's result type (`stub.result`), which is R.
    result: R
    if _declared_local_first() and workflow.patched(LOCAL_FIRST_PATCH):
        result = await _local_first(call, restarted)
    else:
        result = await call.regular()
    if cancelled is not None and cancelled(result):
        raise asyncio.CancelledError("cancelled on request")
    return result


@dataclass(frozen=True, kw_only=True)
class _JobActivity:
    """How a job's main activity is called, as a local or a regular activity."""

    name: str
    arg: Any
    result_type: type
    start_to_close: timedelta
    heartbeat_timeout: timedelta

    async def local(self) -> Any:
        return await workflow.execute_local_activity(
            self.name,
            self.arg,
            result_type=self.result_type,
            retry_policy=JOB_RETRY_POLICY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            start_to_close_timeout=LOCAL_START_TO_CLOSE,
        )

    async def regular(
        self, *, task_queue: str | None = None, schedule_to_start: timedelta | None = None
    ) -> Any:
        """On `task_queue` (None: the workflow's), started within `schedule_to_start`."""
        return await workflow.execute_activity(
            self.name,
            self.arg,
            result_type=self.result_type,
            retry_policy=JOB_RETRY_POLICY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            start_to_close_timeout=self.start_to_close,
            heartbeat_timeout=self.heartbeat_timeout,
            task_queue=task_queue,
            schedule_to_start_timeout=schedule_to_start,
        )


async def _local_first(call: _JobActivity, restarted: Callable[[Any, int], Any] | None) -> Any:
    """The activity as a local activity first; if it handed its run over, as an activity on
    the hand-off queue it names; if that worker is gone, again on the shared queue."""
    try:
        return await call.local()
    except (ActivityError, ApplicationError) as err:
        queue = handed_off_to(err)
        if queue is None:
            raise
        runs_before = handed_off_runs(err)
    try:
        return await call.regular(task_queue=queue, schedule_to_start=HANDOFF_SCHEDULE_TO_START)
    except ActivityError as lost:
        if isinstance(lost.cause, CancelledError):
            # Cancelled before the activity started (a started one returns its run's
            # result, saying cancelled): the run still goes on at that worker.
            await _drop_handed_over(call.name, queue)
            raise
        if not _not_picked_up(lost):
            raise
    workflow.logger.warning("worker %s is gone: the job starts again", queue)
    result = await call.regular()
    return restarted(result, runs_before) if restarted is not None else result


def _declared_local_first() -> bool:
    """Whether the running workflow's kind runs its activity local-first: its declaration is
    the one source (the workflow passes nothing)."""
    kind = kind_for_workflow_type(workflow.info().workflow_type)
    return kind is not None and kind.local_first


async def _drop_handed_over(activity_name: str, queue: str) -> None:
    try:
        await workflow.execute_activity(
            DROP_HANDED_OVER,
            activity_name,
            task_queue=queue,
            schedule_to_close_timeout=HANDOFF_SCHEDULE_TO_START,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
    except ActivityError:  # that worker is gone, and its runs with it
        pass


def handed_off_to(err: ActivityError | ApplicationError) -> str | None:
    """The task queue a local attempt handed its still-running run to, if that is how it
    ended. (A local activity's non-retryable failure reaches the workflow as the
    ApplicationError itself, not wrapped in an ActivityError as a regular one's does.)"""
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError) and cause.type == HANDED_OFF and cause.details:
        return str(cause.details[0])
    return None


def handed_off_runs(err: ActivityError | ApplicationError) -> int:
    """How many runs of the job's code the local phase that handed off made (counted by the
    worker: `usercode.UserCodeRun.run_number`, lost workflow-task attempts included). A
    hand-off recorded before it said so (one detail) had one run, its own."""
    cause = err.cause if isinstance(err, ActivityError) else err
    details = cause.details if isinstance(cause, ApplicationError) else ()
    return int(details[1]) if len(details) > 1 and isinstance(details[1], int) else 1


def _not_picked_up(err: ActivityError) -> bool:
    cause = err.cause
    return isinstance(cause, ActivityTimeout) and cause.type == TimeoutType.SCHEDULE_TO_START


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
