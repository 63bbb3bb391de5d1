"""The Engine: pure, deterministic state transitions of one goal (seed 002's model).

Specs decide (`RequestWork`, `Annotate`, `Finalize`), agents reply (`AgentReply`), and the
Engine folds both into an `EngineState`. No I/O, no clock, no randomness: the workflow runs it
directly, and replaying a history replays the same transitions. Every function returns a new
state and leaves its input untouched, so a rejected transition changes nothing.

A transition that makes no sense (a reply for a step nobody asked for, or for another goal; a
retry of a step that is still running) raises `EngineError` instead of silently changing state.
"""

from __future__ import annotations

from shopfloor.kinds.agents.models import (
    INLINE_OUTPUT_CHARS,
    AgentReply,
    Annotate,
    Decision,
    EngineState,
    Finalize,
    GoalStatus,
    ReplyStatus,
    RequestWork,
    Step,
    StepError,
    StepStatus,
)

# Steps an agent is (still) expected to work on.
RUNNABLE = frozenset({StepStatus.WAITING, StepStatus.IN_PROGRESS})
# Steps a spec may ask to run again.
RETRYABLE = frozenset({StepStatus.FAILED, StepStatus.BLOCKED})

_REPLY_TO_STEP = {
    ReplyStatus.OK: StepStatus.DONE,
    ReplyStatus.FAIL: StepStatus.FAILED,
    ReplyStatus.PARTIAL: StepStatus.IN_PROGRESS,
    ReplyStatus.RATE_LIMITED: StepStatus.BLOCKED,
    ReplyStatus.CONTEXT_EXCEEDED: StepStatus.BLOCKED,
}
# A reply that says something went wrong must say what; these fill in when it does not.
_DEFAULT_ERROR = {
    ReplyStatus.FAIL: "PROVIDER_ERROR",
    ReplyStatus.RATE_LIMITED: "RATE_LIMITED",
    ReplyStatus.CONTEXT_EXCEEDED: "CONTEXT_EXCEEDED",
}


class EngineError(ValueError):
    """A transition the Engine refuses; the state is unchanged."""


def new_state(goal_id: str) -> EngineState:
    return EngineState(goal_id=goal_id)


def _running(state: EngineState, what: str) -> EngineState:
    if state.status is not GoalStatus.RUNNING:
        raise EngineError(f"goal {state.goal_id} is {state.status}: cannot {what}")
    return state.model_copy(deep=True)


def next_step_id(state: EngineState, work_kind: str) -> str:
    """Deterministic ids: `greet-1`, `work-3`: the n-th step of that kind."""
    n = sum(1 for s in state.steps.values() if s.work_kind == work_kind) + 1
    step_id = f"{work_kind}-{n}"
    while step_id in state.steps:  # a kind named like another's id ("a-1" vs "a" + "-1")
        n += 1
        step_id = f"{work_kind}-{n}"
    return step_id


def request_work(state: EngineState, decision: RequestWork) -> EngineState:
    """A new step WAITING, or a FAILED/BLOCKED one WAITING again with its attempt counted."""
    if not decision.work_kind:
        raise EngineError("REQUEST_WORK needs a workKind")
    new = _running(state, "request work")
    if decision.step_id is None:
        step_id = next_step_id(new, decision.work_kind)
        new.steps[step_id] = Step(
            id=step_id, work_kind=decision.work_kind, payload=decision.payload
        )
        return new
    step = new.steps.get(decision.step_id)
    if step is None:
        raise EngineError(f"REQUEST_WORK for unknown step {decision.step_id!r}")
    if step.status not in RETRYABLE:
        raise EngineError(
            f"step {step.id} is {step.status}: only FAILED or BLOCKED steps can be retried"
        )
    if step.work_kind != decision.work_kind:
        raise EngineError(f"step {step.id} is {step.work_kind!r} work, not {decision.work_kind!r}")
    step.status = StepStatus.WAITING
    step.attempt += 1
    step.payload = decision.payload or step.payload
    step.error = None
    step.retry_after_s = None
    return new


def annotate(state: EngineState, decision: Annotate) -> EngineState:
    if not decision.key:
        raise EngineError("ANNOTATE needs a key")
    new = _running(state, "annotate")
    new.annotations[decision.key] = decision.value
    return new


def finalize(state: EngineState, decision: Finalize | None = None) -> EngineState:
    """The spec is done: COMPLETED (or FAILED when it gave up). Refused while steps run."""
    decision = decision or Finalize()
    new = _running(state, "finalize")
    running = [s.id for s in new.steps.values() if s.status in RUNNABLE]
    if running:
        raise EngineError(f"cannot finalize while steps {running} are still running")
    new.status = GoalStatus(decision.status)
    new.reason = decision.reason
    return new


def stop(state: EngineState, status: GoalStatus, reason: str) -> EngineState:
    """Ends the goal from outside the spec (cancel, deadline, iteration cap): allowed with
    steps outstanding, which keep their last status."""
    if status in (GoalStatus.RUNNING, GoalStatus.COMPLETED):
        raise EngineError(f"stop ends a goal as FAILED, CANCELLED or TIMED_OUT, not {status}")
    new = _running(state, f"end it as {status}")
    new.status = status
    new.reason = reason
    return new


def apply_decision(state: EngineState, decision: Decision) -> EngineState:
    if isinstance(decision, RequestWork):
        return request_work(state, decision)
    if isinstance(decision, Annotate):
        return annotate(state, decision)
    if isinstance(decision, Finalize):
        return finalize(state, decision)
    raise EngineError(f"unknown decision {decision!r}")


def apply_reply(state: EngineState, reply: AgentReply) -> EngineState:
    """Folds an agent's reply into the step it answers."""
    if reply.goal_id != state.goal_id:
        raise EngineError(f"reply for goal {reply.goal_id!r} given to goal {state.goal_id!r}")
    new = _running(state, "take a reply")
    step = new.steps.get(reply.step_id)
    if step is None:
        raise EngineError(f"reply for unknown step {reply.step_id!r}")
    if step.status not in RUNNABLE:
        raise EngineError(f"step {step.id} is {step.status}: it is not awaiting a reply")
    step.status = _REPLY_TO_STEP[reply.status]
    if reply.output is not None or reply.status is ReplyStatus.OK:
        step.output = (reply.output or "")[:INLINE_OUTPUT_CHARS]
        step.output_uri = reply.output_uri
    step.error = reply.error
    if reply.status in _DEFAULT_ERROR and step.error is None:
        step.error = StepError(
            code=_DEFAULT_ERROR[reply.status], message=f"agent replied {reply.status}"
        )
    step.retry_after_s = reply.retry_after_s if reply.status is ReplyStatus.RATE_LIMITED else None
    step.usage = step.usage.plus(reply.usage)
    new.usage = new.usage.plus(reply.usage)
    return new


def runnable_steps(state: EngineState) -> list[Step]:
    return [s for s in state.steps.values() if s.status in RUNNABLE]
