"""A job kind that exists only in tests: a signal, a query, an update and the progress query.

Served when `SHOPFLOOR_KIND_MODULES` names this module, as any out-of-tree kind would be.
"""

from __future__ import annotations

from shopfloor.registry import PROGRESS, JobKind, Query, Signal, Update, WorkerBundle
from tests.kinds.steerable.models import (
    LabelChanged,
    Messages,
    Nudge,
    SetLabel,
    SteerInput,
    SteerResult,
)

KIND = JobKind(
    name="steerable",
    summary="Naps on durable timers; nudge it, ask it, relabel it, finish it early.",
    task_queue="steerable-test-queue",
    workflow_type="SteerableTestWorkflow",
    input_model=SteerInput,
    result_model=SteerResult,
    signals=[
        Signal(name="nudge", model=Nudge, description="add a message"),
        Signal(name="finish", description="end the current nap and finish"),
    ],
    queries=[PROGRESS, Query(name="messages", result=Messages)],
    updates=[Update(name="set_label", model=SetLabel, result=LabelChanged)],
    max_concurrent_activities=2,
    bundle=WorkerBundle(
        workflows=["tests.kinds.steerable.workflows:SteerableWorkflow"],
        run_context="tests.kinds.steerable.activities:worker",
    ),
)
