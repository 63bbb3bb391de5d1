"""Worker process: one Temporal worker per task queue, built from the job-kind registry."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from shopfloor.artifacts import ArtifactStore
from shopfloor.jobs import PROGRESS_EVERY_S
from shopfloor.registry import JobKind, WorkerContext, kinds, queue_for
from shopfloor.sandbox import Zygote
from shopfloor.sandbox._limits import protect_from_same_user
from shopfloor.settings import Settings
from shopfloor.temporal import connect_with_retry

log = logging.getLogger("shopfloor.worker")


def select_kinds(names: Sequence[str] | None) -> list[JobKind]:
    registry = kinds()
    if not names:
        return list(registry.values())
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown job kinds {unknown}; known: {sorted(registry)}")
    return [registry[n] for n in names]


def build_workers(
    client: Client, settings: Settings, served: Sequence[JobKind], ctx: WorkerContext
) -> list[Worker]:
    """Kinds that share a task queue share one Worker, as Temporal requires."""
    workflows: dict[str, list[type]] = defaultdict(list)
    activities: dict[str, list] = defaultdict(list)
    for kind in served:
        queue = queue_for(kind, settings)
        workflows[queue] += [kind.workflow, *kind.extra_workflows]
        activities[queue] += list(kind.make_activities(ctx))
    return [
        Worker(
            client,
            task_queue=queue,
            workflows=workflows[queue],
            activities=activities[queue],
            max_concurrent_activities=settings.worker_max_concurrent_activities,
            graceful_shutdown_timeout=timedelta(seconds=5),
            # Progress is shown from heartbeat details: let them reach the server as often as
            # activities send them (the SDK's default throttle is 0.8 × heartbeat timeout).
            max_heartbeat_throttle_interval=timedelta(seconds=PROGRESS_EVERY_S),
        )
        for queue in workflows
    ]


async def worker_context(
    settings: Settings, served: Sequence[JobKind], stack: AsyncExitStack
) -> WorkerContext:
    """What activities share in one worker process: the artifact store, the launcher zygote
    (forks fresh interpreters, so the worker never forks itself) and, when a served kind has
    heavy imports, a warm zygote that has imported them. Closed with `stack`."""
    launcher = await Zygote.start([])
    stack.push_async_callback(launcher.close)
    warm = None
    warm_imports = sorted({m for kind in served for m in kind.warm_imports})
    if warm_imports:
        warm = await Zygote.start(warm_imports)
        stack.push_async_callback(warm.close)
    return WorkerContext(settings, ArtifactStore(settings.artifact_root), warm, launcher)


async def run_worker(settings: Settings, *, stop: asyncio.Event) -> None:
    served = select_kinds(settings.worker_kinds)
    protect_from_same_user()
    client = await connect_with_retry(settings, wait_s=60)
    async with AsyncExitStack() as stack:
        ctx = await worker_context(settings, served, stack)
        workers = build_workers(client, settings, served, ctx)
        for worker in workers:
            await stack.enter_async_context(worker)
        log.info(
            "worker ready: kinds %s on queues %s",
            [k.name for k in served],
            [w.task_queue for w in workers],
        )
        await stop.wait()
