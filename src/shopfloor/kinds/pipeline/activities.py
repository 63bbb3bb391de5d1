"""The pipeline kind's worker side: activities and the queues they run on.

- `pipeline-host-<host>`: the activities that touch this machine's processes and Docker engine
  (start, wait until healthy, probe, stop). A pipeline's workflow sends them to the host queue
  it chose first, so the pipeline stays pinned to the machine where its services live.
- `<name>-queue` of every known pipeline (the shipped definitions and SHOPFLOOR_PIPELINE_DIRS),
  and the kind's own queue: the workflows, and the two small activities they need before they
  know their host (`pipeline_host_queue`) or their definition (`pipeline_definition`).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from shopfloor.heartbeats import heartbeating
from shopfloor.jobs import invalid_input
from shopfloor.kinds.pipeline.definition import known_definitions
from shopfloor.kinds.pipeline.docker_runtime import (
    DockerEngineUnavailable,
    DockerRuntime,
    ImageUnavailable,
    connector,
    engine_address,
)
from shopfloor.kinds.pipeline.health import ContainedChecks
from shopfloor.kinds.pipeline.models import (
    DOCKER_ENGINE_UNAVAILABLE,
    IMAGE_UNAVAILABLE,
    PipelineDefinition,
    Probe,
    ProbeRequest,
    ServiceHandle,
    ServiceRef,
    StopReport,
    start_timeout_s,
)
from shopfloor.kinds.pipeline.process import ProcessRuntime, service_sandbox, stack_of
from shopfloor.kinds.pipeline.runtime import Runtime
from shopfloor.kinds.pipeline.settings import PipelineSettings
from shopfloor.kinds.pipeline.stubs import (
    DEFINITION,
    HOST_QUEUE,
    PROBE,
    START_SERVICE,
    STOP_SERVICE,
    WAIT_HEALTHY,
)
from shopfloor.kinds.pipeline.unpolled import watch_unpolled_queues
from shopfloor.registry import ActivitiesIterator, KindWork, QueueWork, WorkerContext
from shopfloor.settings import Settings
from shopfloor.temporal import connect
from shopfloor.usercode import Zygotes, zygotes

# A service with no health check must still be running after this long to count as started
# (a command that fails at once exits within it).
SETTLE_S = 0.5


def host_queue(settings: Settings, host: str | None = None) -> str:
    """This (or the named) host's activity queue, without the settings' prefix."""
    return f"pipeline-host-{host or settings.of(PipelineSettings).host or socket.gethostname()}"


@asynccontextmanager
async def worker(ctx: WorkerContext) -> ActivitiesIterator:
    from shopfloor.kinds.pipeline.workflows import LogsPipelineWorkflow, PipelineWorkflow

    settings = ctx.settings
    # The worker's zygotes, shared with the script kinds: health-check commands run in them.
    acts = PipelineActivities(settings, await ctx.shared(zygotes))
    workflows = [PipelineWorkflow, LogsPipelineWorkflow]
    known, _ = known_definitions(settings)
    own_queue = "pipeline-task-queue"
    pipeline_queues = sorted({d.queue for _, d in known.values()} - {own_queue})
    # Pipelines started on a queue nobody polls (an unknown name) fail at once (unpolled.py).
    prefix = settings.task_queue_prefix
    watch = asyncio.create_task(
        watch_unpolled_queues(
            lambda: connect(settings),
            prefix=prefix,
            polled={prefix + q for q in (own_queue, *pipeline_queues)},
            known={name: prefix + d.queue for name, (_, d) in known.items()},
        )
    )
    try:
        yield KindWork(
            activities=acts.workflow_side,
            other_queues=[
                QueueWork(task_queue=host_queue(settings), activities=acts.host_side),
                *(
                    QueueWork(task_queue=q, workflows=workflows, activities=acts.workflow_side)
                    for q in pipeline_queues
                ),
            ],
        )
    finally:
        watch.cancel()
        # Services are not stopped: they outlive workers. Only the Docker connection closes.
        await acts.docker.aclose()


class PipelineActivities:
    def __init__(self, settings: Settings, zygotes: Zygotes) -> None:
        self.settings = settings
        own = settings.of(PipelineSettings)
        checks = ContainedChecks(zygotes, settings)
        uids = zygotes.contain.uids if zygotes.contain is not None else None
        self.process = ProcessRuntime(
            own.runtime_dir(settings.data_dir),
            run_as=own.run_as,
            sandbox=service_sandbox(settings, uids),
            checks=checks,
        )
        address = engine_address(own.docker_host)
        self.docker = DockerRuntime(
            connector(address),
            checks=checks,
            address=address,
            host_network=own.docker_host_network,
            volume_roots=own.docker_volume_roots,
            stack=stack_of(own.runtime_dir(settings.data_dir)),
        )

    @property
    def workflow_side(self) -> list[Callable[..., Any]]:
        return [self.pipeline_host_queue, self.pipeline_definition]

    @property
    def host_side(self) -> list[Callable[..., Any]]:
        return [
            self.pipeline_start_service,
            self.pipeline_wait_healthy,
            self.pipeline_probe,
            self.pipeline_stop_service,
        ]

    def runtime(self, ref: ServiceRef) -> Runtime:
        return self.docker if ref.service.runtime == "docker" else self.process

    # -- on the pipeline's queue ----------------------------------------------------------------

    @activity.defn(name=HOST_QUEUE.name)
    async def pipeline_host_queue(self, host: str | None) -> str:
        return self.settings.task_queue_prefix + host_queue(self.settings, host)

    @activity.defn(name=DEFINITION.name)
    async def pipeline_definition(self, name: str) -> PipelineDefinition:
        known, problems = known_definitions(self.settings)
        if name not in known:
            raise invalid_input(
                f"no pipeline definition named {name!r} on this worker (known: {sorted(known)})"
                + (f"; problems: {problems}" if problems else "")
            )
        return known[name][1]

    # -- on the host's queue ---------------------------------------------------------------------

    @activity.defn(name=START_SERVICE.name)
    async def pipeline_start_service(self, ref: ServiceRef) -> ServiceHandle:
        async with heartbeating(f"starting {ref.service.name}"):
            try:
                return await self.runtime(ref).start(ref)
            except (FileNotFoundError, NotADirectoryError, PermissionError) as err:
                raise invalid_input(f"cannot start {ref.service.name}: {err}") from err
            except DockerEngineUnavailable as err:
                # Not retried: seconds of retries do not install an engine or fix an address,
                # and the person starting the pipeline is waiting for the reason.
                raise ApplicationError(
                    f"cannot start {ref.service.name}: {err}",
                    type=DOCKER_ENGINE_UNAVAILABLE,
                    non_retryable=True,
                ) from None
            except ImageUnavailable as err:
                raise ApplicationError(
                    f"cannot start {ref.service.name}: {err}",
                    type=IMAGE_UNAVAILABLE,
                    non_retryable=True,
                ) from None

    @activity.defn(name=WAIT_HEALTHY.name)
    async def pipeline_wait_healthy(self, ref: ServiceRef) -> Probe:
        """Checks until healthy, dead, or out of time; a Probe either way (the workflow decides)."""
        runtime = self.runtime(ref)
        health = ref.service.health
        # No check of its own: a container may still report its image's HEALTHCHECK.
        interval = health.interval_s if health else 0.5
        timeout = start_timeout_s(ref.service)
        started = time.monotonic()
        async with heartbeating(f"waiting for {ref.service.name} to become healthy"):
            if health is None:
                await asyncio.sleep(SETTLE_S)
            while True:
                probe = await runtime.probe(ref)
                if probe.healthy:
                    return probe
                if not probe.alive or probe.stranger:  # another's port: waiting won't help
                    return await self._with_tail(runtime, ref, probe)
                waited = time.monotonic() - started
                if waited >= timeout:
                    probe.error = f"not healthy after {waited:.0f}s: {probe.error}"
                    return await self._with_tail(runtime, ref, probe)
                await asyncio.sleep(interval)

    async def _with_tail(self, runtime: Runtime, ref: ServiceRef, probe: Probe) -> Probe:
        probe.log_tail = probe.log_tail or await runtime.log_tail(ref)
        return probe

    @activity.defn(name=PROBE.name)
    async def pipeline_probe(self, request: ProbeRequest) -> list[Probe]:
        async with heartbeating("checking services"):
            return list(await asyncio.gather(*(self.runtime(r).probe(r) for r in request.refs)))

    @activity.defn(name=STOP_SERVICE.name)
    async def pipeline_stop_service(self, ref: ServiceRef) -> StopReport:
        async with heartbeating(f"stopping {ref.service.name}"):
            try:
                return await self.runtime(ref).stop(ref)
            except DockerEngineUnavailable as err:
                # Retried (the workflow's policy bounds it): its containers may still run, and an
                # engine that is restarting answers again within seconds.
                raise ApplicationError(
                    f"cannot stop {ref.service.name}: {err}", type=DOCKER_ENGINE_UNAVAILABLE
                ) from None
