"""The steerable kind's worker-side lifespan: no activities, just proof the hook runs."""

from __future__ import annotations

from contextlib import asynccontextmanager

from shopfloor.registry import ActivitiesIterator, WorkerContext


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    yield []
