"""Worker process: one Temporal worker per task queue, built from the job-kind registry."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Interceptor, Worker

from shopfloor.activity_failures import FittingFailuresInterceptor
from shopfloor.artifacts import store_for
from shopfloor.idguard import JobIdInterceptor
from shopfloor.jobs import PROGRESS_EVERY_S
from shopfloor.observability.exposition import ProcessRegistry, SdkMetrics, serve
from shopfloor.observability.instruments import ArtifactMetrics
from shopfloor.observability.metrics import JobMetrics, MetricsInterceptor, metrics_runtime
from shopfloor.observability.metrics import install as install_metrics
from shopfloor.observability.tracing import setup_tracing, shutdown_tracing, temporal_interceptors
from shopfloor.outcome import OutcomeInterceptor, check_search_attributes
from shopfloor.processes import free_port
from shopfloor.registry import JobKind, KindWork, QueueWork, WorkerContext, kind_slots, kinds
from shopfloor.sandbox import protect_from_same_user
from shopfloor.settings import Settings
from shopfloor.temporal import connect_with_retry

log = logging.getLogger("shopfloor.worker")
STICKY_TIMEOUT = timedelta(seconds=2)


def select_kinds(names: Sequence[str] | None) -> list[JobKind]:
    registry = kinds()
    if not names:
        return list(registry.values())
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown job kinds {unknown}; known: {sorted(registry)}")
    return [registry[n] for n in names]


@dataclass
class QueuePlan:
    """What one Temporal `Worker` (one task queue) runs in this process."""

    kinds: list[JobKind] = field(default_factory=list)  # whose work runs on this queue
    workflows: list[type] = field(default_factory=list)
    activities: list[Callable[..., Any]] = field(default_factory=list)
    # A queue beside a kind's own (`QueueWork.beside_own_queue`): the queue it counts in,
    # whose slots times `slots_factor` are its activity slots.
    beside: str | None = None
    slots_factor: int = 1

    def slots(self, settings: Settings) -> int:
        """Kinds sharing a queue share its slots: the largest of their settings counts."""
        return max(kind_slots(k, settings) for k in self.kinds)

    def add(self, kind: JobKind, work: QueueWork) -> None:
        if kind not in self.kinds:
            self.kinds.append(kind)
        # Kinds sharing a queue may share workflows and activities (one object each).
        self.workflows += [w for w in work.workflows if w not in self.workflows]
        self.activities += [a for a in work.activities if a not in self.activities]


@asynccontextmanager
async def kind_resources(
    settings: Settings,
    served: Sequence[JobKind],
    *,
    artifact_metrics: ArtifactMetrics | None = None,
) -> AsyncIterator[dict[str, QueuePlan]]:
    """Enters every served kind's lifespan (its activities and what they hold: zygotes, client
    pools) and groups workflows and activities by task queue. Everything is closed on exit."""
    async with AsyncExitStack() as stack:
        artifacts = store_for(settings)
        if artifact_metrics is not None:
            artifacts = artifact_metrics.count(artifacts)
        ctx = await stack.enter_async_context(
            WorkerContext(settings=settings, artifacts=artifacts, served=served)
        )
        plans: dict[str, QueuePlan] = defaultdict(QueuePlan)
        for kind in served:
            work = await stack.enter_async_context(kind.lifespan(ctx))
            if not isinstance(work, KindWork):
                work = KindWork(activities=work)
            own = QueueWork(
                task_queue=kind.task_queue,
                workflows=kind.load_workflows(),
                activities=work.activities,
            )
            for queue in (own, *work.other_queues):
                plan = plans[settings.task_queue_prefix + queue.task_queue]
                plan.add(kind, queue)
                if queue.beside_own_queue:
                    plan.beside = settings.task_queue_prefix + kind.task_queue
                    plan.slots_factor = queue.slots_factor
        yield dict(plans)


def build_workers(
    client: Client,
    settings: Settings,
    plans: dict[str, QueuePlan],
    *,
    metrics: JobMetrics | None = None,
    record_outcomes: bool = True,
) -> list[Worker]:
    """Kinds that share a task queue share one Worker, as Temporal requires. A queue beside a
    kind's own (`QueuePlan.beside`) has the interceptors of that queue, so its jobs count in
    that queue's metrics, and `slots_factor` times its slots."""
    interceptors = {
        queue: _interceptors(queue, plan, settings, metrics, record_outcomes=record_outcomes)
        for queue, plan in plans.items()
        if plan.beside is None
    }
    workers = []
    for queue, plan in plans.items():
        counted = plan.beside or queue
        slots = plans[counted].slots(settings)
        workers.append(
            Worker(
                client,
                task_queue=queue,
                workflows=plan.workflows,
                activities=plan.activities,
                max_concurrent_activities=slots * plan.slots_factor,
                max_concurrent_local_activities=slots,
                interceptors=interceptors[counted],
                graceful_shutdown_timeout=timedelta(seconds=5),
                # A workflow's next task waits this long on a dead worker's sticky queue
                # before any worker may take it (the SDK default, 10 s, stalled every job of
                # a killed worker).
                sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
                # Progress is shown from heartbeat details: let them reach the server as often
                # as activities send them (the SDK's default throttle is 0.8 × heartbeat
                # timeout).
                max_heartbeat_throttle_interval=timedelta(seconds=PROGRESS_EVERY_S),
            )
        )
    return workers


def _interceptors(
    queue: str,
    plan: QueuePlan,
    settings: Settings,
    metrics: JobMetrics | None,
    *,
    record_outcomes: bool,
) -> list[Interceptor]:
    """Job metrics (docs/operations.md), one set per queue, when tracing is on the SDK's
    spans, the job's outcome, and activity failures that fit (`activity_failures`)."""
    return [
        JobIdInterceptor(),  # first: a job with an id that is not its own runs nothing
        # Around every other: a failure too large for the server travels short, as its cause.
        FittingFailuresInterceptor(),
        # Outside the metrics one: the job's start and end lines are logged in its trace.
        *temporal_interceptors(),
        *(
            [MetricsInterceptor(metrics, plan.kinds, queue, plan.slots(settings))]
            if metrics is not None
            else []
        ),
        # Innermost: the job's outcome (search attributes; FAILED for a job that did not
        # pass), which the metrics and the trace then see as the job's end. Off only for a
        # server that cannot hold them (the SDK's time-skipping test server).
        *([OutcomeInterceptor()] if record_outcomes else []),
    ]


async def run_worker(settings: Settings, *, stop: asyncio.Event) -> None:
    served = select_kinds(settings.worker_kinds)
    protect_from_same_user()
    runtime = None
    registry: ProcessRegistry | None = None
    if settings.worker_metrics_port:
        # The SDK's exporter on a private loopback port, read by the worker's own endpoint
        # (which adds process, pipeline, agent and artifact metrics). Runs may reach neither.
        sdk_port = free_port()
        settings = settings.model_copy(
            update={"sandbox_protected_ports": [*settings.sandbox_protected_ports, sdk_port]}
        )
        # Before connecting: the client and its workers report to the runtime it was made with.
        runtime = metrics_runtime("127.0.0.1", sdk_port)
        Runtime.set_default(runtime, error_if_already_set=False)
        registry = ProcessRegistry("shopfloor-worker")
        registry.add(
            SdkMetrics(f"http://127.0.0.1:{sdk_port}/metrics", {"service": registry.service})
        )
    metrics = install_metrics(runtime, registry.inner if registry else None)
    artifact_metrics = ArtifactMetrics(registry.inner) if registry else None
    setup_tracing(settings, "worker")
    client = await connect_with_retry(settings, wait_s=60)
    # Every job records its outcome in search attributes: without them its first workflow
    # task would fail for ever. Say so now, naming the command that registers them.
    await check_search_attributes(client)
    async with AsyncExitStack() as stack:
        stack.callback(shutdown_tracing)
        if registry is not None:
            server = serve(
                registry.outer, settings.worker_metrics_host, settings.worker_metrics_port
            )
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
            log.info(
                "metrics on http://%s:%d/metrics",
                settings.worker_metrics_host,
                settings.worker_metrics_port,
            )
        plans = await stack.enter_async_context(
            kind_resources(settings, served, artifact_metrics=artifact_metrics)
        )
        workers = build_workers(client, settings, plans, metrics=metrics)
        for worker in workers:
            await stack.enter_async_context(worker)
        log.info(
            "worker ready: kinds %s on queues %s",
            [k.name for k in served],
            {q: plan.slots(settings) for q, plan in plans.items()},
        )
        await stop.wait()
