"""Worker metrics on one Prometheus endpoint: the Temporal SDK's runtime metrics (`temporal_*`:
task slots, poll and schedule-to-start latencies, workflow and activity outcomes) and
shopfloor's job metrics (`shopfloor_*`), recorded through the same runtime's metric meter.

Job metrics come from a worker interceptor, so every kind gets them without code of its own:

- workflows: `shopfloor_jobs_started{kind}`, `shopfloor_jobs_finished{kind,outcome}` and
  `shopfloor_job_duration_seconds{kind,outcome}` (outcome: passed, failed — completed but did
  not pass, e.g. a script that exited 1 — error, cancelled). Recorded through the workflow's
  meter, which records nothing while a workflow replays: a job counts once however many
  workers replay it.
- activities: `shopfloor_activities_finished{kind,activity,outcome}` and
  `shopfloor_activity_duration_seconds{kind,activity}`, `shopfloor_sandbox_kills{kind,reason}`
  (a run killed for its time, memory, disk or process limit, or cancelled), and
  `shopfloor_activity_slots_free{task_queue}` / `shopfloor_activity_slots{task_queue}`.
- `shopfloor_zygote_starts{zygote}`: each start of the `cold` or `warm` zygote (more than one
  per worker's life is a restart: its process died), or of the simulation kind's `light` one
  (started when its geometry cache has an entry, stopped when idle).

The SDK's exporter listens on a private loopback port; the worker's own endpoint
(`SHOPFLOOR_WORKER_METRICS_PORT`) serves it merged with what prometheus-client collects in the
worker process (`process_*`, `python_*`, pipeline services, agent calls, artifact bytes: see
`WorkerMetrics`), every sample labelled `service="shopfloor-worker"`. Durations are seconds
(`durations_as_seconds`): the SDK's millisecond histograms had no unit in their names.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError, CancelledError, FailureError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from shopfloor.jobs import HANDED_OFF
from shopfloor.outcome import ERROR_TYPES
from shopfloor.registry import JobKind, kinds, load

log = logging.getLogger("shopfloor.metrics")

# Seconds: jobs run from well under a second (a warm script) to hours (phased, pipelines).
JOB_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600]
ACTIVITY_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800]


def metrics_runtime(host: str, port: int) -> Runtime:
    """A Temporal runtime serving Prometheus metrics on host:port (clients and workers made
    with it report there; shopfloor's job metrics use its meter). Durations in seconds, with
    `_seconds` in their names; counters end in `_total` (the one SDK counter whose name
    already does is fixed where the worker serves it, `SdkMetrics`)."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}",
                counters_total_suffix=True,
                # The SDK's latencies as `…_latency_seconds` histograms in seconds (they were
                # milliseconds with no unit in the name: an alert's threshold read wrong).
                durations_as_seconds=True,
                unit_suffix=True,
                histogram_bucket_overrides={
                    "shopfloor_job_duration_seconds": JOB_BUCKETS,
                    "shopfloor_activity_duration_seconds": ACTIVITY_BUCKETS,
                },
            ),
            # `service_name="temporal-core-sdk"` on every sample said nothing; the worker's
            # endpoint labels every sample with `service` instead.
            attach_service_name=False,
        )
    )


@dataclasses.dataclass(frozen=True)
class _KindInfo:
    name: str
    passed: Callable[[dict[str, Any]], bool] | None
    kill_reason: Callable[[dict[str, Any]], str | None] | None


def _kind_table(kinds: list[JobKind]) -> dict[str, _KindInfo]:
    table = {}
    for kind in kinds:
        for wf_type in (kind.workflow_type, *kind.other_workflow_types):
            table[wf_type] = _KindInfo(kind.name, kind.passed, kind.presentation.kill_reason)
    return table


def _as_json(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def job_outcome(kind: _KindInfo | None, result: Any) -> str:
    """passed, or failed for a job that completed without passing (its kind's own test)."""
    if kind is None or kind.passed is None:
        return "passed"
    data = _as_json(result)
    try:
        return "passed" if isinstance(data, dict) and kind.passed(data) else "failed"
    except Exception:  # noqa: BLE001 - a metric label must never fail a job
        return "failed"


def kill_reason(kind: _KindInfo | None, result: Any) -> str | None:
    """Why the sandbox killed the run, as the job's kind reads it from an activity's result."""
    data = _as_json(result)
    if kind is None or kind.kill_reason is None or not isinstance(data, dict):
        return None
    try:
        return kind.kill_reason(data)
    except Exception:  # noqa: BLE001 - a metric label must never fail an activity
        return None


class JobMetrics:
    """The instruments, made once on a meter (the runtime's, or a no-op one)."""

    def __init__(self, meter: MetricMeter) -> None:
        self.meter = meter
        self.activities_finished = meter.create_counter(
            "shopfloor_activities_finished", "job activities that ended, by outcome"
        )
        self.activity_duration = meter.create_histogram_float(
            "shopfloor_activity_duration_seconds", "run time of job activities"
        )  # no unit argument: `unit_suffix` would add `_s` to a name that says seconds
        self.sandbox_kills = meter.create_counter(
            "shopfloor_sandbox_kills", "runs the sandbox killed, by reason"
        )
        self.slots_free = meter.create_gauge(
            "shopfloor_activity_slots_free", "activity slots of a task queue not in use"
        )
        self.slots = meter.create_gauge(
            "shopfloor_activity_slots", "activity slots of a task queue in this worker"
        )
        self.zygote_starts = meter.create_counter(
            "shopfloor_zygote_starts", "zygote processes started (more than one each: restarts)"
        )


_current: dict[str, JobMetrics] = {}
_observers: dict[str, ActivityObservers] = {}


def job_metrics() -> JobMetrics | None:
    return _current.get("metrics")


@dataclasses.dataclass
class ActivityObservers:
    """prometheus-client instruments fed from activities' arguments and results: each kind's
    `WorkerBundle.observer`, made once on the process's registry."""

    observers: list[Any]

    @classmethod
    def on(cls, registry: CollectorRegistry) -> ActivityObservers:
        paths = {k.bundle.observer for k in kinds().values() if k.bundle.observer}
        return cls([load(path)(registry) for path in sorted(paths)])

    def observe(
        self, activity_type: str, args: list[Any], result: Any, error: BaseException | None
    ) -> None:
        for observer in self.observers:
            try:
                observer.observe(activity_type, args, result, error)
            except Exception:  # noqa: BLE001 - a metric must never fail an activity
                log.debug("cannot observe %s", activity_type, exc_info=True)


class MetricsInterceptor(Interceptor):
    """One per worker (task queue): counts its jobs, activities, kills and free slots."""

    def __init__(
        self, metrics: JobMetrics, kinds: list[JobKind], task_queue: str, slots: int
    ) -> None:
        self.metrics = metrics
        self.table = _kind_table(kinds)
        self.task_queue = task_queue
        self.slots = slots
        self.running = 0
        attrs = {"task_queue": task_queue}
        metrics.slots.with_additional_attributes(attrs).set(slots)
        self._free = metrics.slots_free.with_additional_attributes(attrs)
        self._free.set(slots)

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityMetrics(next, self)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        table = self.table

        class _Bound(_WorkflowMetrics):
            kinds = table

        return _Bound

    def _slot_taken(self, delta: int) -> None:
        self.running += delta
        self._free.set(max(0, self.slots - self.running))


class _ActivityMetrics(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, owner: MetricsInterceptor) -> None:
        super().__init__(next)
        self.owner = owner

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        kind = self.owner.table.get(info.workflow_type or "")
        attrs = {"kind": kind.name if kind else "other", "activity": info.activity_type}
        metrics = self.owner.metrics
        self.owner._slot_taken(+1)
        began = time.monotonic()
        outcome = "error"
        observers = _observers.get("worker")
        try:
            result = await super().execute_activity(input)
            outcome = "completed"
            if observers is not None:
                observers.observe(info.activity_type, list(input.args), result, None)
            reason = kill_reason(kind, result)
            if reason:
                metrics.sandbox_kills.with_additional_attributes(
                    {"kind": attrs["kind"], "reason": reason}
                ).add(1)
                # Inside the activity: the line carries the job's ids and its trace's.
                log.warning("run killed by the sandbox: %s", reason, extra={"kind": attrs["kind"]})
            return result
        except BaseException as err:
            if isinstance(err, CancelledError) or type(err).__name__ == "CancelledError":
                outcome = "cancelled"
            elif isinstance(err, ApplicationError) and err.type == HANDED_OFF:
                outcome = "handed_off"  # a local attempt whose run goes on in an activity
            if observers is not None and outcome == "error":
                observers.observe(info.activity_type, list(input.args), None, err)
            raise
        finally:
            self.owner._slot_taken(-1)
            metrics.activity_duration.with_additional_attributes(attrs).record(
                time.monotonic() - began
            )
            metrics.activities_finished.with_additional_attributes(
                {**attrs, "outcome": outcome}
            ).add(1)


class _WorkflowMetrics(WorkflowInboundInterceptor):
    """Inside the workflow sandbox: only deterministic calls; the workflow's meter skips
    replays."""

    kinds: Mapping[str, _KindInfo] = {}

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        info = workflow.info()
        kind = self.kinds.get(info.workflow_type)
        if kind is None:
            return await super().execute_workflow(input)
        meter = workflow.metric_meter()
        first_run = info.continued_run_id is None and info.attempt == 1
        if first_run:
            meter.create_counter("shopfloor_jobs_started", "jobs started").add(
                1, {"kind": kind.name}
            )
            # workflow.logger says nothing while replaying: one line per job, like the meter.
            workflow.logger.info(
                "job started: %s %s",
                kind.name,
                info.workflow_id,
                extra={"event": "job_started", "kind": kind.name},
            )
        outcome: str | None = None
        try:
            result = await super().execute_workflow(input)
            outcome = job_outcome(kind, result)
            return result
        except BaseException as err:
            name = type(err).__name__
            if name == "ContinueAsNewError":
                outcome = None  # the job goes on in its next run
            elif isinstance(err, CancelledError) or name == "CancelledError":
                outcome = "cancelled"
            elif isinstance(err, ApplicationError) and err.type in ERROR_TYPES.values():
                # A job its kind says did not pass (shopfloor.outcome): failed or timed_out,
                # the user's business, not an "error" of the infrastructure.
                outcome = next(o for o, t in ERROR_TYPES.items() if t == err.type)
            elif isinstance(err, FailureError):
                outcome = "error"
            # Anything else fails the workflow task, not the job: it is retried.
            raise
        finally:
            if outcome is not None:
                attrs = {"kind": kind.name, "outcome": outcome}
                meter.create_counter("shopfloor_jobs_finished", "jobs that ended").add(1, attrs)
                took = max((workflow.now() - info.workflow_start_time).total_seconds(), 0.0)
                meter.create_histogram_float(
                    "shopfloor_job_duration_seconds", "jobs' run time, start to end"
                ).record(took, attrs)
                workflow.logger.info(
                    "job ended: %s %s %s after %.3fs",
                    kind.name,
                    info.workflow_id,
                    outcome,
                    took,
                    extra={
                        "event": "job_ended",
                        "kind": kind.name,
                        "outcome": outcome,
                        "duration_s": round(took, 3),
                    },
                )


def install(runtime: Runtime | None, registry: CollectorRegistry | None = None) -> JobMetrics:
    """The process's instruments on `runtime`'s meter (a no-op meter without one), a counter
    of zygote starts fed from the sandbox's log of them, and, with a prometheus-client
    `registry`, the instruments the kinds feed from their activities' results."""
    meter = runtime.metric_meter if runtime is not None else MetricMeter.noop
    metrics = JobMetrics(meter)
    _current["metrics"] = metrics
    if registry is not None:
        _observers["worker"] = ActivityObservers.on(registry)
    logging.getLogger("shopfloor.zygote").addFilter(_ZygoteStarts(metrics))
    return metrics


class _ZygoteStarts(logging.Filter):
    """Counts "zygote ready" records of the sandbox (a start or a restart); drops nothing."""

    def __init__(self, metrics: JobMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            record.msg == "zygote %s ready (pid %s) with %s"
            and isinstance(args, tuple)
            and len(args) == 3
        ):
            zygote = str(args[0])
            self.metrics.zygote_starts.with_additional_attributes({"zygote": zygote}).add(1)
        return True
