"""Agent coordinator workflows (seed 002): the Spec decides, an Agent works, the Engine folds.

Decisions and folds are pure and deterministic, so they run here in the workflow; only the
agent call and artifact storage are activities. One iteration is: decide, run every WAITING
step (in parallel when a spec asks for several), fold the replies. `helloWorkflow` and
`multiStepWorkflow` are the seed's type names; `agentCoordinatorWorkflow` runs any spec.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from shopfloor.failures import failure_message
    from shopfloor.jobs import (
        HEARTBEAT_TIMEOUT,
        JOB_RETRY_POLICY,
        ReportsProgress,
        invalid_input,
        job_input,
    )
    from shopfloor.kinds.agents import engine
    from shopfloor.kinds.agents.models import (
        AddInstruction,
        AgentReply,
        AgentRequest,
        CarriedState,
        CoordinatorConfig,
        CoordinatorResult,
        CoordinatorState,
        EngineState,
        GoalStatus,
        InstructionAdded,
        ReplyStatus,
        Step,
        StepError,
        StepStatus,
        StoreArtifacts,
        config_problem,
        config_warnings,
    )
    from shopfloor.kinds.agents.specs import Spec, SpecError, spec_for
    from shopfloor.kinds.agents.stubs import CANCEL_OWN_JOB, RUN_AGENT_STEP, STORE_AGENT_ARTIFACTS
    from shopfloor.outcome import OUTCOME_PATCH

# Agent calls are retried as every job activity is (`jobs.JOB_RETRY_POLICY`: 5xx and network
# errors with backoff); after the last attempt the step gets a FAIL reply (PROVIDER_ERROR)
# and the spec decides what next.
STORE_RETRY = RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30))
DEFAULT_CALL_TIMEOUT_S = 600.0
# Versioning: changes to the commands a workflow issues go behind a patch, so that runs begun
# under the old code replay (tests/agents/histories holds a recorded pre-patch run).
BATCHED_STORE_PATCH = "agents-batched-artifact-store"


class CoordinatorWorkflow(ReportsProgress):
    """The loop and its handlers; subclasses fix the workflow type and its default spec."""

    default_spec = "hello"

    def __init__(self) -> None:
        self._state: EngineState | None = None
        self._config: CoordinatorConfig | None = None
        self._iteration = 0
        self._runs = 1
        self._instructions: list[str] = []
        self._paused = False
        self._cancel = False
        self._current: str | None = None
        self._deadline: datetime | None = None

    # -- the loop ---------------------------------------------------------------------------

    async def coordinate(self, config: CoordinatorConfig) -> CoordinatorResult:
        problem = config_problem(config)
        if problem:
            # Fails the run at once, before any agent is called.
            raise invalid_input(problem)
        spec_type = config.spec_type or self.default_spec
        try:
            spec = spec_for(spec_type, config.spec_config)
        except SpecError as err:
            raise invalid_input(str(err)) from err
        self._config = config
        self._resume(config)
        state = self._state
        assert state is not None
        started_iteration = self._iteration
        try:
            while state.status is GoalStatus.RUNNING:
                ended = self._should_end(config)
                if ended is not None:
                    state = engine.stop(state, *ended)
                    break
                state = self._decide(spec, state)
                if state.status is not GoalStatus.RUNNING:
                    break
                steps = engine.runnable_steps(state)
                if not steps:
                    state = engine.stop(
                        state, GoalStatus.FAILED, f"spec {spec_type!r} decided nothing to do"
                    )
                    break
                if self._iteration >= config.max_iterations:
                    state = engine.stop(
                        state,
                        GoalStatus.FAILED,
                        f"stopped after maxIterations ({config.max_iterations}) iterations",
                    )
                    break
                if self._paused:
                    self._state = state
                    await self._wait_while_paused()
                    continue  # decide again: cancel, deadline or an instruction may have come
                self._iteration += 1
                state = await self._run_steps(config, state, steps)
                self._state = state
                await self._honour_rate_limits(state)
                if self._should_continue_as_new(config, started_iteration):
                    await self._continue_as_new(config, state)
        except asyncio.CancelledError:
            # `shopfloor cancel` / a Temporal cancel request: end as the cancel signal does,
            # with the artifacts stored.
            state = self._state or state
            if state.status is GoalStatus.RUNNING:
                state = engine.stop(state, GoalStatus.CANCELLED, "cancel requested")
        self._state = state
        return await self._finish(config, state)

    def _resume(self, config: CoordinatorConfig) -> None:
        carried = config.carried
        if carried is None:
            self._state = engine.new_state(config.goal_id)
            if config.deadline_s is not None:
                self._deadline = workflow.now() + timedelta(seconds=config.deadline_s)
            return
        self._state = carried.state
        self._iteration = carried.iteration
        self._instructions = list(carried.instructions)
        self._paused = self._paused or carried.paused
        self._cancel = self._cancel or carried.cancel_requested
        self._runs = carried.runs + 1
        self._deadline = datetime.fromisoformat(carried.deadline) if carried.deadline else None

    def _should_end(self, config: CoordinatorConfig) -> tuple[GoalStatus, str] | None:
        if self._cancel:
            return GoalStatus.CANCELLED, "cancel requested"
        if self._deadline is not None and workflow.now() >= self._deadline:
            return GoalStatus.TIMED_OUT, f"deadline of {config.deadline_s} s passed"
        return None

    def _decide(self, spec: Spec, state: EngineState) -> EngineState:
        for decision in spec.decide(state):
            try:
                state = engine.apply_decision(state, decision)
            except engine.EngineError as err:
                # A spec that asks for the impossible is a bug no retry fixes: say which.
                raise ApplicationError(
                    f"spec made an invalid decision {decision.type}: {err}",
                    type="SpecDecisionError",
                    non_retryable=True,
                ) from err
        return state

    async def _run_steps(
        self, config: CoordinatorConfig, state: EngineState, steps: list[Step]
    ) -> EngineState:
        self._current = ", ".join(s.id for s in steps)
        self._report_running(config, state, f"calling {config.agent_type}")
        instructions = list(self._instructions)
        replies = await asyncio.gather(
            *(self._call_agent(config, step, instructions) for step in steps)
        )
        for reply in replies:
            state = engine.apply_reply(state, reply)
        self._current = None
        self._report_running(config, state, "folded replies")
        return state

    async def _call_agent(
        self, config: CoordinatorConfig, step: Step, instructions: list[str]
    ) -> AgentReply:
        # A step the agent left PARTIAL goes on from its output so far.
        going_on = step.status is StepStatus.IN_PROGRESS
        request = AgentRequest(
            job_id=workflow.info().workflow_id,
            goal_id=config.goal_id,
            step_id=step.id,
            work_kind=step.work_kind,
            payload=step.payload,
            attempt=step.attempt,
            agent_type=config.agent_type,
            agent_config=config.agent_config,
            instructions=instructions,
            partial=step.output if going_on and step.output_uri is None else None,
            partial_uri=step.output_uri if going_on else None,
        )
        timeout_s = config.agent_options.timeout_s or DEFAULT_CALL_TIMEOUT_S
        try:
            return await RUN_AGENT_STEP.execute(
                request,
                start_to_close_timeout=timedelta(seconds=timeout_s),
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=JOB_RETRY_POLICY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                # The workflow was cancelled and took the call with it: the loop handles that.
                raise asyncio.CancelledError() from err
            return AgentReply(
                goal_id=config.goal_id,
                step_id=step.id,
                status=ReplyStatus.FAIL,
                error=StepError(code="PROVIDER_ERROR", message=failure_message(err)),
            )

    async def _honour_rate_limits(self, state: EngineState) -> None:
        """A 429's retry-after as a durable timer: no worker holds a slot while it waits, and
        a crash does not shorten it. Cancel ends the wait early."""
        waits = [
            s.retry_after_s
            for s in state.steps.values()
            if s.status is StepStatus.BLOCKED and s.retry_after_s
        ]
        if not waits or state.status is not GoalStatus.RUNNING:
            return
        await self.sleep(
            timedelta(seconds=max(waits)),
            purpose="for the agent's rate limit to pass",
            step=self._current,
            until=lambda: self._cancel,
        )

    async def _wait_while_paused(self) -> None:
        self.report("paused", step=self._current, iteration=self._iteration)
        condition = lambda: not self._paused or self._cancel  # noqa: E731
        if self._deadline is None:
            await workflow.wait_condition(condition)
            return
        remaining = self._deadline - workflow.now()
        if remaining > timedelta(0):
            try:
                await workflow.wait_condition(condition, timeout=remaining)
            except TimeoutError:
                pass

    # -- continue-as-new ----------------------------------------------------------------------

    def _should_continue_as_new(self, config: CoordinatorConfig, started_iteration: int) -> bool:
        if workflow.info().is_continue_as_new_suggested():
            return True
        return self._iteration - started_iteration >= config.iterations_per_run

    async def _continue_as_new(self, config: CoordinatorConfig, state: EngineState) -> None:
        # Signals and updates already accepted must be handled before the run hands over.
        await workflow.wait_condition(workflow.all_handlers_finished)
        carried = CarriedState(
            state=state,
            iteration=self._iteration,
            instructions=self._instructions,
            paused=self._paused,
            cancel_requested=self._cancel,
            deadline=self._deadline.isoformat() if self._deadline else None,
            runs=self._runs,
        )
        workflow.continue_as_new(config.model_copy(update={"carried": carried}))

    # -- the end --------------------------------------------------------------------------------

    async def _finish(self, config: CoordinatorConfig, state: EngineState) -> CoordinatorResult:
        self.report(f"storing artifacts ({state.status})", iteration=self._iteration)
        to_store = {**state.annotations, "final-state": state.model_dump(mode="json")}
        artifacts: dict[str, str] = {}
        if self._batched_store():
            artifacts = await self._store(config, to_store)
        else:
            # Runs that began before the change stored one artifact per activity, and replay so.
            for key, value in to_store.items():
                artifacts.update(await self._store(config, {key: value}))
        self.report(state.status.value, iteration=self._iteration, goal_status=state.status)
        result = CoordinatorResult(
            goal_id=state.goal_id,
            status=state.status,
            reason=state.reason,
            steps=list(state.steps.values()),
            annotations=state.annotations,
            artifacts=artifacts,
            usage=state.usage,
            iterations=self._iteration,
            runs=self._runs,
            warnings=config_warnings(config),
        )
        if state.status is GoalStatus.CANCELLED:
            await self._end_cancelled(result)
        return result

    async def _end_cancelled(self, result: CoordinatorResult) -> None:
        """A cancelled goal's job ends CANCELED, however it was cancelled (the `cancel`
        signal, or a Temporal cancel request): an activity records its result in history
        (where GET /jobs/<id>/result reads a CANCELED job's) and asks Temporal to cancel the
        job. The job's outcome interceptor then ends it CANCELED (shopfloor.outcome). Runs
        begun before outcomes were recorded end as they did: COMPLETED, status CANCELLED."""
        if not workflow.patched(OUTCOME_PATCH):
            return
        try:
            await CANCEL_OWN_JOB.execute(
                result,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STORE_RETRY,
                # Its result must reach history before the job ends.
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            # The request it made may have come while it ran (then the SDK took it to cancel
            # the activity, which had already completed): wait only when it has not.
            if not _cancel_requested():
                await workflow.wait_condition(lambda: False)
        except asyncio.CancelledError:
            pass  # the request arrived

    def _batched_store(self) -> bool:
        """v2: all artifacts in one activity (one round trip instead of one per key)."""
        return workflow.patched(BATCHED_STORE_PATCH)

    async def _store(self, config: CoordinatorConfig, artifacts: dict[str, Any]) -> dict[str, str]:
        return await STORE_AGENT_ARTIFACTS.execute(
            StoreArtifacts(
                job_id=workflow.info().workflow_id, goal_id=config.goal_id, artifacts=artifacts
            ),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=STORE_RETRY,
        )

    def _report_running(self, config: CoordinatorConfig, state: EngineState, doing: str) -> None:
        done = sum(1 for s in state.steps.values() if s.status is StepStatus.DONE)
        self.report(
            f"iteration {self._iteration}/{config.max_iterations}: {doing}",
            step=self._current,
            iteration=self._iteration,
            goal_status=state.status.value,
            steps_done=f"{done}/{len(state.steps)}",
            tokens=state.usage.input_tokens + state.usage.output_tokens,
        )

    # -- steering ---------------------------------------------------------------------------------

    def _finished(self) -> bool:
        return self._state is not None and self._state.status is not GoalStatus.RUNNING

    @workflow.signal(name="pause")
    def pause(self) -> None:
        self._paused = True

    @workflow.signal(name="resume")
    def resume(self) -> None:
        self._paused = False

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        """The step in flight finishes; then the artifacts are stored and the goal ends
        CANCELLED."""
        self._cancel = True

    @workflow.query(name="state")
    def query_state(self) -> CoordinatorState:
        config = self._config
        return CoordinatorState(
            state=self._state or engine.new_state(config.goal_id if config else "?"),
            iteration=self._iteration,
            max_iterations=config.max_iterations if config else 0,
            paused=self._paused,
            cancel_requested=self._cancel,
            instructions=self._instructions,
            current_step=self._current,
            runs=self._runs,
        )

    @workflow.update(name="add_instruction")
    def add_instruction(self, instruction: AddInstruction) -> InstructionAdded:
        self._instructions.append(instruction.text)
        return InstructionAdded(
            count=len(self._instructions), applies_from_iteration=self._iteration + 1
        )

    @add_instruction.validator
    def _check_instruction(self, instruction: AddInstruction) -> None:
        # Rejected updates never reach the history; the caller gets the reason.
        if self._finished() or self._cancel:
            raise ValueError("the goal has finished: instructions are no longer taken")
        if not instruction.text.strip():
            raise ValueError("an instruction needs some text")


def _cancel_requested() -> bool:
    """Whether Temporal has asked this run to cancel: its main task counts the request even
    when the workflow caught it (to store its artifacts first)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@workflow.defn(name="agentCoordinatorWorkflow")
class AgentCoordinatorWorkflow(CoordinatorWorkflow):
    """Any spec, named by `specType` (default `hello`)."""

    @workflow.run
    async def run(self, raw: Any = None) -> CoordinatorResult:
        return await self.coordinate(job_input(CoordinatorConfig, raw))


@workflow.defn(name="helloWorkflow")
class HelloWorkflow(CoordinatorWorkflow):
    """Seed 002's `helloWorkflow`: HelloSpec unless the config names another."""

    @workflow.run
    async def run(self, raw: Any = None) -> CoordinatorResult:
        return await self.coordinate(job_input(CoordinatorConfig, raw))


@workflow.defn(name="multiStepWorkflow")
class MultiStepWorkflow(CoordinatorWorkflow):
    """Seed 002's `multiStepWorkflow`: plan → work steps → review unless the config says."""

    default_spec = "multi-step"

    @workflow.run
    async def run(self, raw: Any = None) -> CoordinatorResult:
        return await self.coordinate(job_input(CoordinatorConfig, raw))
