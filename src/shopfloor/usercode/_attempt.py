"""The activity attempt a run of user code serves, as Temporal tells it: its keys for the
hand-off and adoption, how it heartbeats, and whether Temporal lost it."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from temporalio import activity

from shopfloor.jobs import PROGRESS_EVERY_S, heartbeat_progress
from shopfloor.sandbox import Progress
from shopfloor.usercode._handoff import ANY_ATTEMPT, ActivityKey, handoff_key

log = logging.getLogger("shopfloor.sandbox")
# How long a local attempt waits for the server to say how many of its workflow task's
# attempts were lost (`lost_workflow_tasks`) before it counts none.
DESCRIBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Attempt:
    key: ActivityKey  # what its run is kept under
    number: int
    local: bool
    task_queue: str
    handoff_key: ActivityKey  # where a local attempt of the same job leaves its run

    @property
    def result_owner(self) -> int:
        """The attempt a kept result is owned by: a later attempt claims it. A local attempt's
        retry comes as attempt 1 again (its workflow task was lost): its results are anyone's."""
        return ANY_ATTEMPT if self.local else self.number


def this_attempt() -> Attempt | None:
    """The calling activity's attempt (None: not in an activity, nothing to adopt)."""
    try:
        info = activity.info()
    except RuntimeError:
        return None
    handoff = handoff_key(info.workflow_id, info.workflow_run_id, info.activity_type)
    own: ActivityKey = (info.workflow_id or "", info.workflow_run_id or "", info.activity_id)
    return Attempt(
        key=handoff if info.is_local else own,
        number=info.attempt,
        local=info.is_local,
        task_queue=info.task_queue,
        handoff_key=handoff,
    )


def heartbeat_here() -> Callable[[Progress], None]:
    """Progress as heartbeats of the calling activity attempt, from whatever task reports it."""
    context = contextvars.copy_context()
    return lambda progress: context.run(heartbeat_progress, progress)


def collecting_heartbeat() -> Callable[[int, int], None] | None:
    """`collect_tree`'s progress as heartbeats of the calling activity (called on its event
    loop), sent from the thread that collects every PROGRESS_EVERY_S: storing thousands of
    files can take longer than the heartbeat timeout."""
    try:
        if activity.info().is_local:
            return None  # a local attempt cannot heartbeat
    except RuntimeError:
        return None
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    last = time.monotonic()

    def report(done: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            details = {"collecting": "out/", "stored": done, "of": total}
            # An async activity's heartbeat must be sent from its event loop.
            loop.call_soon_threadsafe(context.run, activity.heartbeat, details)

    return report


def attempt_lost() -> bool:
    """This attempt was cancelled because Temporal gave up on it (heartbeat timeout, or it no
    longer knows the attempt: a server that was away), not on request nor because the worker
    stops: its run may go on, for a later attempt to adopt."""
    details = activity.cancellation_details()
    return (
        details is not None
        and not details.cancel_requested
        and not details.worker_shutdown
        and (details.timed_out or details.not_found)
    )


async def lost_workflow_tasks() -> int:
    """How many attempts of the workflow task the calling local activity runs in were lost
    before this one (0 when this is not a local activity, or the server cannot say).

    A local activity runs inside its workflow task: a worker that dies with it (SIGKILL, the
    host gone) takes the run with it, and the workflow task is retried on any worker, where
    the local activity starts again as attempt 1 — Temporal does not count that run. The
    server does: the pending workflow task's attempt grows by one for each attempt lost
    (timed out or failed), whichever host ran it. Until its result is recorded the local
    activity is scheduled afresh in every retry of that workflow task, so each lost attempt
    had a run of it (or was lost before starting it: counted all the same)."""
    try:
        info = activity.info()
        if not info.is_local:
            return 0
        handle = activity.client().get_workflow_handle(
            info.workflow_id or "", run_id=info.workflow_run_id
        )
        described = await asyncio.wait_for(handle.describe(), DESCRIBE_TIMEOUT_S)
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001 - a count we cannot get is no reason to fail a run
        log.warning("cannot tell how many earlier runs were lost (%s): counting none", err)
        return 0
    raw = described.raw_description
    if not raw.HasField("pending_workflow_task"):
        return 0
    return max(0, raw.pending_workflow_task.attempt - 1)
