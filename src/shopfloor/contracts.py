"""Typed activity stubs: an activity's contract — its name on the wire, its argument and its
result type — written once and shared by the workflow that calls it and the worker that runs it.

A kind declares its stubs in a light module (`kinds/<kind>/stubs.py`: models only, no activity
code), its workflows call them (`await RUN_AGENT_STEP.execute(request, …)`) and its activities
register under the stub's name (`@activity.defn(name=RUN_AGENT_STEP.name)`). The name and the
result type never travel apart, and tests/test_activity_stubs.py checks that every stub has
exactly one implementation in its kind's worker bundle, taking the stub's argument and
returning its result type.

Imported by workflows: deterministic and light (the SDK's `workflow` module only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

A = TypeVar("A")
R = TypeVar("R")


@dataclass(frozen=True)
class ActivityStub(Generic[A, R]):
    """One activity as a workflow sees it. `arg` and `result` are the types the payloads
    convert to and from (a model, `str`, `list[Probe]`…)."""

    name: str
    arg: Any
    result: Any

    async def execute(
        self,
        arg: A,
        *,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        task_queue: str | None = None,
        cancellation_type: workflow.ActivityCancellationType = (
            workflow.ActivityCancellationType.TRY_CANCEL
        ),
    ) -> R:
        """`workflow.execute_activity` by this stub's name, its result decoded as `result`."""
        result: R = await workflow.execute_activity(
            self.name,
            arg,
            result_type=self.result,
            task_queue=task_queue,
            start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout,
            schedule_to_start_timeout=schedule_to_start_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=retry_policy,
            cancellation_type=cancellation_type,
        )
        return result
