"""Worker-side resources: kinds' lifespans are entered once and closed on stop; slots per queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from temporalio import activity

from shopfloor.artifacts import LocalArtifactStore
from shopfloor.registry import KindWork, QueueWork, WorkerContext, kinds
from shopfloor.settings import Settings
from shopfloor.worker import QueuePlan, kind_resources
from tests.kinds.steerable.kind import KIND as STEERABLE

EVENTS: list[str] = []


@asynccontextmanager
async def pool(ctx: WorkerContext) -> AsyncIterator[str]:
    EVENTS.append("opened")
    yield "a pool"
    EVENTS.append("closed")


async def test_shared_resources_open_once_and_close_with_the_worker(tmp_path: Path) -> None:
    EVENTS.clear()
    ctx = WorkerContext(
        settings=Settings(data_dir=tmp_path), artifacts=LocalArtifactStore(tmp_path)
    )
    async with ctx:
        assert await ctx.shared(pool) == "a pool"
        assert await ctx.shared(pool) == "a pool"  # the same instance for a second kind
        assert EVENTS == ["opened"]
    assert EVENTS == ["opened", "closed"]


async def test_kind_resources_group_by_queue_and_take_each_kinds_workflows(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, task_queue_prefix="p-")
    async with kind_resources(settings, [STEERABLE]) as plans:
        assert list(plans) == ["p-steerable-test-queue"]
        plan = plans["p-steerable-test-queue"]
        assert [w.__name__ for w in plan.workflows] == ["SteerableWorkflow"]
        assert plan.activities == []


def test_slots_per_queue(tmp_path: Path) -> None:
    script, simulation = kinds()["script"], kinds()["simulation"]
    defaults = Settings(data_dir=tmp_path, worker_max_concurrent_activities=8)
    assert QueuePlan(kinds=[STEERABLE]).slots(defaults) == 2  # the kind's own default
    assert QueuePlan(kinds=[script]).slots(defaults) == 8  # none: the settings' default
    tuned = Settings(data_dir=tmp_path, worker_concurrency={"script": 3, "simulation": 5})
    assert QueuePlan(kinds=[script]).slots(tuned) == 3
    # Kinds sharing a queue share its slots: the largest counts.
    assert QueuePlan(kinds=[script, simulation]).slots(tuned) == 5
    assert QueuePlan(kinds=[replace(STEERABLE, max_concurrent_activities=None)]).slots(tuned) == 8


@activity.defn(name="on_this_host")
async def on_this_host() -> str:
    return "here"


@asynccontextmanager
async def two_queue_worker(ctx: WorkerContext) -> AsyncIterator[KindWork]:
    yield KindWork(other_queues=[QueueWork(task_queue="host-a", activities=[on_this_host])])


async def test_a_kind_can_run_work_on_other_queues(tmp_path: Path) -> None:
    bundle = replace(STEERABLE.bundle, run_context=f"{__name__}:two_queue_worker")
    kind = replace(STEERABLE, bundle=bundle)
    settings = Settings(data_dir=tmp_path, task_queue_prefix="p-")
    async with kind_resources(settings, [kind]) as plans:
        assert set(plans) == {"p-steerable-test-queue", "p-host-a"}
        assert plans["p-host-a"].activities == [on_this_host]
        assert plans["p-steerable-test-queue"].activities == []
