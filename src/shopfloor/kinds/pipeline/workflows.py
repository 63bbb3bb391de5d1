"""PipelineWorkflow: start services in dependency order, each gated on its health check; keep
them up; stop them in reverse order. LogsPipelineWorkflow: seed 004's logs pipeline.

Every side effect is an activity on the queue of the host the pipeline is pinned to. The
activities are idempotent (a start finds the running service), so a worker dying anywhere
leaves neither a half-started stack nor a second copy of a service.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from shopfloor.contracts import ActivityStub
    from shopfloor.failures import failure_message
    from shopfloor.jobs import (
        HEARTBEAT_TIMEOUT,
        INVALID_INPUT,
        JOB_RETRY_POLICY,
        ReportsProgress,
        invalid_input,
        job_input,
        what_was_sent,
    )
    from shopfloor.kinds.pipeline.models import (
        DOCKER_ENGINE_UNAVAILABLE,
        IMAGE_UNAVAILABLE,
        Phase,
        PipelineDefinition,
        PipelineInput,
        PipelineResult,
        PipelineStatus,
        Probe,
        ProbeRequest,
        RestartService,
        ServiceRef,
        ServiceRestarted,
        ServiceSpec,
        ServiceState,
        ServiceStatus,
        StoppedService,
        start_timeout_s,
    )
    from shopfloor.kinds.pipeline.stubs import (
        DEFINITION,
        HOST_QUEUE,
        PROBE,
        START_SERVICE,
        STOP_SERVICE,
        WAIT_HEALTHY,
    )

A = TypeVar("A")
R = TypeVar("R")

# Supervision ticks per run before continuing as new: keeps the history small for a pipeline
# that runs for months (Temporal also suggests it when the history grows large).
TICKS_PER_RUN = 500
SERVICE_UNHEALTHY = "ServiceUnhealthy"
# Probes are cheap and repeated every tick anyway: a failed one is not worth many retries.
PROBE_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=1))
_CREATED_NOTHING = (DOCKER_ENGINE_UNAVAILABLE, IMAGE_UNAVAILABLE)
# LogsPipelineWorkflow with no input fails at once; before, it ran the `logs` pipeline.
NAME_REQUIRED_PATCH = "shopfloor-pipeline-name-required"


@workflow.defn(name="PipelineWorkflow")
class PipelineWorkflow(ReportsProgress):
    def __init__(self) -> None:
        self._definition: PipelineDefinition | None = None
        self._services: dict[str, ServiceStatus] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._phase: Phase = "starting"
        self._host_queue: str | None = None
        self._token = ""
        self._stop = False
        self._failed: str | None = None  # the service whose start failed
        self._error: str | None = None
        self._started: list[str] = []  # in the order their starts began
        self._stopped: list[StoppedService] = []

    @workflow.run
    async def run(self, raw: Any = None) -> PipelineResult:
        return await self.run_pipeline(job_input(PipelineInput, raw))

    # -- steering -------------------------------------------------------------------------------

    @workflow.signal(name="stop")
    def stop(self) -> None:
        self._stop = True

    @workflow.query(name="status")
    def status(self) -> PipelineStatus:
        return PipelineStatus(
            name=self._definition.name if self._definition else "",
            phase=self._phase,
            host_queue=self._host_queue,
            services=list(self._services.values()),
            error=self._error,
        )

    @workflow.update(name="restart_service")
    async def restart_service(self, request: RestartService) -> ServiceRestarted:
        spec = self._spec(request.service)
        healthy = await self._restart(spec, why="restart requested")
        st = self._services[spec.name]
        return ServiceRestarted(
            service=spec.name,
            healthy=healthy,
            restarts=st.restarts,
            pid=st.pid,
            container_id=st.container_id,
            health=st.health,
        )

    @restart_service.validator
    def _check_restart(self, request: RestartService) -> None:
        if self._definition is None or self._definition.service(request.service) is None:
            names = [s.name for s in self._definition.services] if self._definition else []
            raise ValueError(f"no service {request.service!r} in this pipeline; it has {names}")
        if self._phase != "running" or self._stop:
            raise ValueError(f"the pipeline is {self._phase}: services restart only while running")

    # -- the pipeline's life ---------------------------------------------------------------------

    async def run_pipeline(self, job: PipelineInput) -> PipelineResult:
        d = self._definition = job.definition
        self._stop = self._stop or job.stop_requested
        self._token = job.run_token or str(workflow.uuid4())[:8]
        self._locks = {s.name: asyncio.Lock() for s in d.services}
        if job.carried:  # continued as new: the services are up, keep watching them
            self._services = {s.name: s for s in job.carried}
            self._started = d.start_order()
            self._phase = "running"
        else:
            self._services = {
                s.name: ServiceStatus(name=s.name, runtime=s.runtime) for s in d.services
            }
        # The first step decides the host; every later one runs there (pinned).
        self._host_queue = job.host_queue or await HOST_QUEUE.execute(
            d.host,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=JOB_RETRY_POLICY,
        )
        try:
            if not job.carried:
                await self._start_all()
            if self._failed:
                await self._roll_back()
            await self._supervise()
        except asyncio.CancelledError:
            # Cancelling the job stops its services too, then records the cancel.
            await self._stop_all(list(reversed(self._started)))
            raise
        await self._stop_all(list(reversed(d.start_order())))
        return PipelineResult(
            name=d.name,
            phase=self._phase,
            services=list(self._services.values()),
            stopped=self._stopped,
        )

    async def _start_all(self) -> None:
        """Each service starts as soon as everything it depends on is healthy: independent
        branches start in parallel. The first failure stops new starts."""
        d = self._definition
        assert d is not None
        self.report("starting services", step="start")

        async def bring_up(spec: ServiceSpec) -> None:
            await workflow.wait_condition(
                lambda: (
                    bool(self._failed or self._stop)
                    or all(self._services[n].state == "healthy" for n in spec.depends_on)
                )
            )
            if self._failed or self._stop:
                return
            if not await self._start_one(spec):
                self._failed = self._failed or spec.name

        await asyncio.gather(*(bring_up(self._spec(n)) for n in d.start_order()))
        if not self._failed:
            self._phase = "running"

    async def _start_one(self, spec: ServiceSpec) -> bool:
        st = self._services[spec.name]
        self._set(st, "starting")
        if spec.name not in self._started:
            # Recorded before the start: after a crash mid-start the service may exist.
            self._started.append(spec.name)
        started = False
        try:
            handle = await self._host(START_SERVICE, self._ref(spec), timedelta(minutes=15))
            started = True
            st.pid, st.container_id = handle.pid, handle.container_id
            st.leftovers_stopped += handle.leftovers
            probe: Probe = await self._host(
                WAIT_HEALTHY,
                self._ref(spec),
                timedelta(seconds=start_timeout_s(spec) + 60),
            )
        except ActivityError as err:
            probe = Probe(alive=False, healthy=False, error=failure_message(err))
            cause = err.cause
            first_start = self._phase == "starting"  # not a restart: nothing ran before
            if first_start and isinstance(cause, ApplicationError):
                if cause.type in _CREATED_NOTHING:
                    # No engine, or no image: no container exists to stop, and a rollback
                    # that tried would only wait out the same error again.
                    self._started.remove(spec.name)
        if probe.healthy:
            st.pid = probe.pid or st.pid
            st.container_id = probe.container_id or st.container_id
            st.health, st.failed_checks = "ok", 0
            self._set(st, "healthy")
            return True
        st.health = probe.error or "unhealthy"
        self._set(st, "failed")
        failure = "did not become healthy" if started else "could not start"
        self._error = f"service {spec.name!r} {failure}: {st.health}"
        if probe.log_tail:
            self._error += f"\n--- last lines of its log ---\n{probe.log_tail.rstrip()}"
        return False

    async def _roll_back(self) -> None:
        d = self._definition
        assert d is not None and self._error is not None
        await self._stop_all(list(reversed(self._started)), final_phase="failed")
        # The result travels with the failure (docs/outcomes.md): each service's state and
        # health, what was stopped.
        result = PipelineResult(
            name=d.name,
            phase=self._phase,
            services=list(self._services.values()),
            stopped=self._stopped,
        )
        raise ApplicationError(
            f"pipeline {d.name!r} failed to start, rolled back: {self._error}",
            result.model_dump(mode="json"),
            type=SERVICE_UNHEALTHY,
            non_retryable=True,
        )

    async def _supervise(self) -> None:
        d = self._definition
        assert d is not None
        ticks = 0
        while not self._stopping():
            await self.sleep(
                timedelta(seconds=d.supervise_every_s),
                purpose="for the next health check",
                step="supervising",
                until=self._stopping,
            )
            if self._stopping():
                return
            await self._check_all()
            ticks += 1
            if ticks >= TICKS_PER_RUN or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    PipelineInput(
                        definition=d,
                        host_queue=self._host_queue,
                        run_token=self._token,
                        carried=list(self._services.values()),
                        stop_requested=self._stop,
                    )
                )

    async def _check_all(self) -> None:
        d = self._definition
        assert d is not None
        # A service being restarted (an update) is its restart's business this tick.
        specs = [s for s in d.services if not self._locks[s.name].locked()]
        if not specs:
            return
        try:
            probes = await PROBE.execute(
                ProbeRequest(refs=[self._ref(s) for s in specs]),
                task_queue=self._host_queue,
                start_to_close_timeout=timedelta(seconds=120),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=PROBE_RETRY,
            )
        except ActivityError as err:
            # The host did not answer (its worker may be restarting): nothing is known, so
            # nothing is restarted. The next tick asks again.
            self.report(f"health check failed: {failure_message(err)}", step="supervising")
            return
        now = workflow.now()
        for spec, probe in zip(specs, probes, strict=True):
            st = self._services[spec.name]
            if probe.healthy:
                st.health, st.failed_checks, st.failed_restarts = "ok", 0, 0
                st.next_restart_at = None
                if st.state != "healthy":
                    self._set(st, "healthy")
                continue
            st.health = probe.error or "unhealthy"
            st.failed_checks += 1
            threshold = spec.health.failures_before_restart if spec.health else 1
            self._set(st, "unhealthy" if probe.alive else "dead", keep_since=True)
            due = st.next_restart_at is None or now >= st.next_restart_at
            if (not probe.alive or st.failed_checks >= threshold) and due and not self._stop:
                await self._restart(spec, why=st.health)

    async def _restart(self, spec: ServiceSpec, *, why: str) -> bool:
        """Stop and start one service, with exponential backoff between failed restarts."""
        d = self._definition
        assert d is not None
        st = self._services[spec.name]
        async with self._locks[spec.name]:
            self.report(f"restarting {spec.name}: {why}", step="supervising")
            self._set(st, "restarting")
            st.restarts += 1
            try:
                await self._host(
                    STOP_SERVICE,
                    self._ref(spec),
                    timedelta(seconds=spec.stop_timeout_s + 60),
                )
            except ActivityError as err:
                st.health = f"stop before restart failed: {failure_message(err)}"
            healthy = await self._start_one(spec)
            if healthy:
                st.failed_restarts, st.next_restart_at = 0, None
            else:
                st.failed_restarts += 1
                delay = d.restart.delay_s(st.failed_restarts)
                st.next_restart_at = workflow.now() + timedelta(seconds=delay)
                self._set(st, "unhealthy", keep_since=True)
            self._error = None  # a failed restart is the service's state, not the pipeline's
            return healthy

    async def _stop_all(self, order: list[str], final_phase: Phase = "stopped") -> None:
        """Stops services one at a time in `order` (dependents before what they need)."""
        d = self._definition
        assert d is not None
        self._phase = "stopping"
        for name in order:
            spec = d.service(name)
            assert spec is not None
            st = self._services[name]
            async with self._locks[name]:
                self.report(f"stopping {name}", step="stop")
                failed = st.state == "failed"  # stays so: its health says why
                if not failed:
                    self._set(st, "stopping")
                # Shielded: a cancelled job still stops every service it started.
                report = await asyncio.shield(
                    self._host(
                        STOP_SERVICE,
                        self._ref(spec),
                        timedelta(seconds=spec.stop_timeout_s + 60),
                    )
                )
                self._stopped.append(
                    StoppedService(
                        name=name, was_running=report.was_running, stopped_at=workflow.now()
                    )
                )
                st.pid = None
                st.leftovers_stopped += report.leftovers
                if st.state == "stopping":
                    self._set(st, "stopped")
        self._phase = final_phase
        self.report(f"pipeline {final_phase}", step="stop")

    # -- helpers ----------------------------------------------------------------------------------

    def _stopping(self) -> bool:
        """Whether a stop was asked (read afresh after each await: the signal may have come)."""
        return self._stop

    def _spec(self, name: str) -> ServiceSpec:
        assert self._definition is not None
        spec = self._definition.service(name)
        assert spec is not None
        return spec

    def _ref(self, spec: ServiceSpec) -> ServiceRef:
        assert self._definition is not None
        return ServiceRef(pipeline=self._definition.name, run_token=self._token, service=spec)

    def _set(self, st: ServiceStatus, state: ServiceState, *, keep_since: bool = False) -> None:
        if st.state != state or not keep_since:
            st.since = workflow.now()
        st.state = state

    async def _host(self, stub: ActivityStub[A, R], arg: A, timeout: timedelta) -> R:
        """An activity on the queue of the host the pipeline is pinned to."""
        return await stub.execute(
            arg,
            task_queue=self._host_queue,
            start_to_close_timeout=timeout,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=JOB_RETRY_POLICY,
        )


@workflow.defn(name="LogsPipelineWorkflow")
class LogsPipelineWorkflow(PipelineWorkflow):
    """Seed 004's entry point: started with the service name (`start_workflow(
    "LogsPipelineWorkflow", "logs", task_queue="logs-queue")`), it runs the shipped `logs`
    definition (otel-collector → loki → grafana). It also takes a PipelineInput, as the
    pipeline routes and continue-as-new send."""

    @workflow.run
    async def run(self, raw: Any = None) -> PipelineResult:
        if isinstance(raw, dict | PipelineInput):
            return await self.run_pipeline(job_input(PipelineInput, raw))
        if raw in (None, "") and not workflow.patched(NAME_REQUIRED_PATCH):
            raw = "logs"  # started before the name was required: it ran the logs pipeline
        if not isinstance(raw, str) or not raw:
            raise invalid_input(
                "LogsPipelineWorkflow input must be the name of a pipeline definition (a JSON "
                'string, e.g. "logs") or a PipelineInput object, got ' + what_was_sent(raw)
            )
        try:
            definition = await DEFINITION.execute(
                raw,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=JOB_RETRY_POLICY,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == INVALID_INPUT:
                raise invalid_input(cause.message) from None  # names the known pipelines
            raise
        return await self.run_pipeline(PipelineInput(definition=definition))
