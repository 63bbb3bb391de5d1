"""PhasedWorkflow: runs a phased definition step by step — agent turns, durable waits, HTTP
calls, child jobs of any kind, parallel groups — and reports where it is."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from shopfloor.contracts import ActivityStub
    from shopfloor.failures import failure_message
    from shopfloor.jobs import HEARTBEAT_TIMEOUT, INVALID_INPUT, ReportsProgress, job_input
    from shopfloor.kinds.phased.models import (
        AgentTurnRequest,
        AgentTurnStep,
        DelayStep,
        HttpRequest,
        HttpStep,
        JobStep,
        ParallelStep,
        PhasedDefinition,
        PhasedInput,
        PhasedResult,
        StepOutcome,
        StepRetry,
    )
    from shopfloor.kinds.phased.references import resolve
    from shopfloor.kinds.phased.stubs import AGENT_TURN, HTTP_STEP
    from shopfloor.registry import kind_for_workflow_type, kind_named

A = TypeVar("A")
R = TypeVar("R")
TURN_TIMEOUT = timedelta(seconds=330)  # the gateway's 300 s, plus connection set-up
HTTP_TIMEOUT = timedelta(seconds=60)
FINAL_ERRORS = [INVALID_INPUT, "GatewayRejected", "UnexpectedStatus", "KillSwitchOn"]


class StepFailed(Exception):
    def __init__(self, step_id: str, reason: str) -> None:
        super().__init__(f"step {step_id!r} failed: {reason}")
        self.step_id = step_id
        self.reason = reason


class PhasedRunner(ReportsProgress):
    """Runs a definition; shared by PhasedWorkflow and the seed's PoetryResearchWorkflow."""

    def __init__(self) -> None:
        self._outcomes: dict[str, StepOutcome] = {}
        self._order: list[str] = []
        self._total = 0

    async def run_definition(self, definition: PhasedDefinition) -> PhasedResult:
        self._total = len(definition.steps)
        try:
            for index, step in enumerate(definition.steps, 1):
                await self._run(step, position=f"{index}/{self._total}")
        except StepFailed as failed:
            result = self._result(definition, failed)
            # The job fails in Temporal's terms too (every client sees FAILED), naming the step.
            raise ApplicationError(
                str(failed), result.model_dump(mode="json"), type="StepFailed", non_retryable=True
            ) from None
        self.report("completed", step=None, steps=len(self._order))
        return self._result(definition, None)

    def _result(self, definition: PhasedDefinition, failed: StepFailed | None) -> PhasedResult:
        return PhasedResult(
            name=definition.name,
            status="FAILED" if failed else "COMPLETED",
            steps=[self._outcomes[i] for i in self._order],
            error=str(failed) if failed else None,
        )

    async def _run(self, step: Any, *, position: str) -> None:
        outcome = StepOutcome(id=step.id, type=step.type, status="COMPLETED", started_at=_now())
        self._outcomes[step.id] = outcome
        self._order.append(step.id)
        if step.type != "delay":
            self.report(f"step {position}: {step.id} ({step.type})", step=step.id)
        try:
            outcome.result = await self._dispatch(step, position)
        except StepFailed as failed:
            outcome.status, outcome.error = "FAILED", failed.reason
            raise
        except (ActivityError, ChildWorkflowError, ApplicationError, ValueError) as err:
            if is_cancelled_exception(err):
                # The job was cancelled and took the step with it (a retrying activity, a
                # child job): the job ends CANCELED, not FAILED "Activity cancelled".
                outcome.status, outcome.error = "CANCELLED", "cancelled"
                raise asyncio.CancelledError("cancelled on request") from None
            outcome.status, outcome.error = "FAILED", failure_message(err)
            raise StepFailed(step.id, outcome.error) from None
        finally:
            outcome.ended_at = _now()

    async def _dispatch(self, step: Any, position: str) -> Any:
        done = {k: v.model_dump(mode="json") for k, v in self._outcomes.items()}
        if isinstance(step, DelayStep):
            await self.sleep(step.duration, purpose=f"for step {position}: {step.id}", step=step.id)
            return None
        if isinstance(step, AgentTurnStep):
            turn = AgentTurnRequest(job_id=resolve(step.job_id, done))
            result = await _step_activity(AGENT_TURN, turn, step, TURN_TIMEOUT)
            return result.model_dump(mode="json")
        if isinstance(step, HttpStep):
            request = HttpRequest(
                method=step.method,
                url=resolve(step.url, done),
                expect_status=step.expected,
                headers=resolve(step.headers, done),
                body=resolve(step.body, done),
            )
            response = await _step_activity(HTTP_STEP, request, step, HTTP_TIMEOUT)
            return response.model_dump(mode="json", by_alias=True)
        if isinstance(step, JobStep):
            return await self._child_job(step, resolve(step.input, done))
        if isinstance(step, ParallelStep):
            names = ", ".join(s.id for s in step.steps)
            self.report(f"step {position}: {step.id} (parallel: {names})", step=step.id)
            await asyncio.gather(
                *(self._run(s, position=f"{position} · {s.id}") for s in step.steps)
            )
            return {s.id: self._outcomes[s.id].result for s in step.steps}
        raise StepFailed(step.id, f"unknown step type {step.type!r}")

    async def _child_job(self, step: JobStep, job_input: dict[str, Any]) -> Any:
        # The registry names where each kind runs; reading it is deterministic per deployment.
        with workflow.unsafe.sandbox_unrestricted():
            kind = kind_named(step.kind)
        if kind is None:
            raise StepFailed(step.id, f"unknown job kind {step.kind!r}")
        info = workflow.info()
        # This workflow's own queue carries the deployment's task-queue prefix: so do its jobs.
        with workflow.unsafe.sandbox_unrestricted():
            own = kind_for_workflow_type(info.workflow_type)
        prefix = info.task_queue.removesuffix(own.task_queue) if own else ""
        self.report(f"running child job {step.kind} for step {step.id}", step=step.id)
        child_id = f"{info.workflow_id}-{step.id}"
        self._outcomes[step.id].job_id = child_id
        result = await workflow.execute_child_workflow(
            kind.workflow_type,
            job_input,
            id=child_id,
            task_queue=prefix + kind.task_queue,
            execution_timeout=step.timeout,
            memo={"kind": kind.name, "parent": info.workflow_id},
        )
        return result


async def _step_activity(
    stub: ActivityStub[A, R], arg: A, step: Any, default_timeout: timedelta
) -> R:
    """A step's activity, with the step's own timeout and retry policy."""
    return await stub.execute(
        arg,
        start_to_close_timeout=step.timeout or default_timeout,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        retry_policy=_retry_policy(step.retry),
    )


def _retry_policy(retry: StepRetry) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=retry.initial,
        maximum_interval=retry.maximum,
        backoff_coefficient=retry.backoff,
        maximum_attempts=retry.attempts,
        non_retryable_error_types=FINAL_ERRORS,
    )


def _now() -> str:
    return workflow.now().isoformat()


@workflow.defn(name="PhasedWorkflow")
class PhasedWorkflow(PhasedRunner):
    @workflow.run
    async def run(self, raw: Any = None) -> PhasedResult:
        return await self.run_definition(job_input(PhasedInput, raw).definition)
