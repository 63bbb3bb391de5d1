"""What running user code adds to a kind's worker bundle: its zygotes and, for a kind that
runs local-first, this worker process's hand-off queue beside the kind's own, with the kind's
activities (that take handed-over runs over) and the drop activity."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from temporalio import activity

from shopfloor.jobs import DROP_HANDED_OVER
from shopfloor.registry import Activities, JobKind, KindWork, QueueWork, WorkerContext
from shopfloor.usercode._handoff import handoff_key, handoff_queue
from shopfloor.usercode._zygotes import Zygotes, zygotes

log = logging.getLogger("shopfloor.sandbox")
# A hand-off queue's Worker has room for every run handed over plus the lost attempts of some
# (their runs are bounded by `RunSlots`, not by the Worker's activity slots).
HANDOFF_SLOTS_FACTOR = 2


async def kind_work(ctx: WorkerContext, kind: JobKind, activities: Activities) -> KindWork:
    """`activities` on the kind's own queue and, when the kind runs local-first, on this worker
    process's hand-off queue beside it (with the drop activity)."""
    if not kind.local_first:
        return KindWork(activities=activities)
    handoff = QueueWork(
        task_queue=handoff_queue(kind.task_queue),
        activities=[*activities, *await ctx.shared(_handoff_activities)],
        beside_own_queue=True,
        slots_factor=HANDOFF_SLOTS_FACTOR,
    )
    return KindWork(activities=activities, other_queues=[handoff])


@asynccontextmanager
async def _handoff_activities(ctx: WorkerContext) -> AsyncIterator[list[Callable[..., Any]]]:
    """One drop activity per worker process, whichever kinds share its hand-off queues."""
    yield [_drop_handed_over(await ctx.shared(zygotes))]


def _drop_handed_over(zygotes: Zygotes) -> Callable[[str], Awaitable[bool]]:
    @activity.defn(name=DROP_HANDED_OVER)
    async def drop_handed_over(activity_type: str) -> bool:
        """Kills and frees the run a local attempt of `activity_type` handed over, when the
        job was cancelled before the activity that would have taken the run started."""
        info = activity.info()
        key = handoff_key(info.workflow_id, info.workflow_run_id, activity_type)
        runs = zygotes.runs
        handed = runs.executions.claim(key, info.attempt) if runs is not None else None
        if handed is None or runs is None:
            return False
        runs.executions.release(key, info.attempt, handed)
        log.info("job %s was cancelled before its run was taken over: killed", info.workflow_id)
        await handed.close()
        return True

    return drop_handed_over
