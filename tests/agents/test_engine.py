"""The Engine and the specs, without Temporal: every transition and every refusal."""

from __future__ import annotations

import pytest

from shopfloor.kinds.agents import engine
from shopfloor.kinds.agents.engine import EngineError
from shopfloor.kinds.agents.models import (
    INLINE_OUTPUT_CHARS,
    AgentReply,
    Annotate,
    EngineState,
    Finalize,
    GoalStatus,
    ReplyStatus,
    RequestWork,
    StepError,
    StepStatus,
    Usage,
)

GOAL = "goal-1"


def waiting(work_kind: str = "greet") -> EngineState:
    return engine.request_work(engine.new_state(GOAL), RequestWork(work_kind=work_kind))


def reply(status: ReplyStatus, step_id: str = "greet-1", **fields: object) -> AgentReply:
    return AgentReply(goal_id=GOAL, step_id=step_id, status=status, **fields)


def test_request_work_adds_a_waiting_step_with_a_deterministic_id() -> None:
    state = engine.new_state(GOAL)
    one = engine.request_work(state, RequestWork(work_kind="greet", payload={"message": "hi"}))
    two = engine.request_work(one, RequestWork(work_kind="greet"))
    assert list(two.steps) == ["greet-1", "greet-2"]
    step = two.steps["greet-1"]
    assert step.status is StepStatus.WAITING and step.attempt == 1
    assert step.payload == {"message": "hi"}
    assert state.steps == {}  # the input state is never changed


@pytest.mark.parametrize(
    ("status", "step_status"),
    [
        (ReplyStatus.OK, StepStatus.DONE),
        (ReplyStatus.FAIL, StepStatus.FAILED),
        (ReplyStatus.PARTIAL, StepStatus.IN_PROGRESS),
        (ReplyStatus.RATE_LIMITED, StepStatus.BLOCKED),
        (ReplyStatus.CONTEXT_EXCEEDED, StepStatus.BLOCKED),
    ],
)
def test_each_reply_status_moves_the_step(status: ReplyStatus, step_status: StepStatus) -> None:
    state = engine.apply_reply(waiting(), reply(status, output="text"))
    assert state.steps["greet-1"].status is step_status
    assert state.status is GoalStatus.RUNNING


def test_ok_reply_records_output_and_usage() -> None:
    usage = Usage(input_tokens=10, output_tokens=5, calls=1)
    state = engine.apply_reply(waiting(), reply(ReplyStatus.OK, output="Hello!", usage=usage))
    step = state.steps["greet-1"]
    assert step.output == "Hello!" and step.error is None
    assert step.usage == usage and state.usage == usage


def test_long_output_is_cut_in_state() -> None:
    text = "x" * (INLINE_OUTPUT_CHARS + 10)
    state = engine.apply_reply(
        waiting(), reply(ReplyStatus.OK, output=text, output_uri="artifact://j/o.txt")
    )
    step = state.steps["greet-1"]
    assert len(step.output or "") == INLINE_OUTPUT_CHARS
    assert step.output_uri == "artifact://j/o.txt"


def test_error_replies_get_an_error_code_even_when_the_agent_gives_none() -> None:
    for status, code in [
        (ReplyStatus.FAIL, "PROVIDER_ERROR"),
        (ReplyStatus.RATE_LIMITED, "RATE_LIMITED"),
        (ReplyStatus.CONTEXT_EXCEEDED, "CONTEXT_EXCEEDED"),
    ]:
        step = engine.apply_reply(waiting(), reply(status)).steps["greet-1"]
        assert step.error is not None and step.error.code == code
    given = StepError(code="MOCK", message="boom")
    step = engine.apply_reply(waiting(), reply(ReplyStatus.FAIL, error=given)).steps["greet-1"]
    assert step.error == given


def test_rate_limit_keeps_retry_after_and_other_replies_do_not() -> None:
    limited = engine.apply_reply(waiting(), reply(ReplyStatus.RATE_LIMITED, retry_after_s=7))
    assert limited.steps["greet-1"].retry_after_s == 7
    failed = engine.apply_reply(waiting(), reply(ReplyStatus.FAIL, retry_after_s=7))
    assert failed.steps["greet-1"].retry_after_s is None


def test_partial_then_ok_completes_the_step() -> None:
    state = engine.apply_reply(waiting(), reply(ReplyStatus.PARTIAL, output="Hel"))
    assert engine.runnable_steps(state)[0].id == "greet-1"
    state = engine.apply_reply(state, reply(ReplyStatus.OK, output="Hello"))
    assert state.steps["greet-1"].status is StepStatus.DONE
    assert engine.runnable_steps(state) == []


@pytest.mark.parametrize("status", [ReplyStatus.FAIL, ReplyStatus.RATE_LIMITED])
def test_retry_of_failed_or_blocked_step_counts_the_attempt(status: ReplyStatus) -> None:
    state = engine.apply_reply(waiting(), reply(status, retry_after_s=3))
    again = engine.request_work(state, RequestWork(work_kind="greet", step_id="greet-1"))
    step = again.steps["greet-1"]
    assert step.status is StepStatus.WAITING and step.attempt == 2
    assert step.error is None and step.retry_after_s is None
    assert list(again.steps) == ["greet-1"]


def test_annotate_and_finalize() -> None:
    state = engine.apply_reply(waiting(), reply(ReplyStatus.OK, output="Hello"))
    state = engine.apply_decision(state, Annotate(key="greeting", value="Hello"))
    assert state.annotations == {"greeting": "Hello"}
    done = engine.apply_decision(state, Finalize())
    assert done.status is GoalStatus.COMPLETED and done.reason is None
    gave_up = engine.finalize(state, Finalize(status=GoalStatus.FAILED, reason="no"))
    assert gave_up.status is GoalStatus.FAILED and gave_up.reason == "no"


@pytest.mark.parametrize("status", [GoalStatus.CANCELLED, GoalStatus.TIMED_OUT, GoalStatus.FAILED])
def test_stop_ends_the_goal_with_steps_outstanding(status: GoalStatus) -> None:
    stopped = engine.stop(waiting(), status, "why")
    assert stopped.status is status and stopped.reason == "why"
    assert stopped.steps["greet-1"].status is StepStatus.WAITING


# -- refusals: each leaves the state as it was ------------------------------------------------


def test_reply_for_another_goal_is_an_error() -> None:
    state = waiting()
    with pytest.raises(EngineError, match="goal 'other'"):
        engine.apply_reply(state, AgentReply(goal_id="other", step_id="greet-1", status="OK"))
    assert state.steps["greet-1"].status is StepStatus.WAITING


def test_reply_for_unknown_step_is_an_error() -> None:
    with pytest.raises(EngineError, match="unknown step 'nope-1'"):
        engine.apply_reply(waiting(), reply(ReplyStatus.OK, step_id="nope-1"))


@pytest.mark.parametrize("first", [ReplyStatus.OK, ReplyStatus.FAIL, ReplyStatus.RATE_LIMITED])
def test_second_reply_for_a_settled_step_is_an_error(first: ReplyStatus) -> None:
    state = engine.apply_reply(waiting(), reply(first))
    with pytest.raises(EngineError, match="not awaiting a reply"):
        engine.apply_reply(state, reply(ReplyStatus.OK))


def test_retry_of_unknown_running_or_done_step_is_an_error() -> None:
    state = waiting()
    with pytest.raises(EngineError, match="unknown step"):
        engine.request_work(state, RequestWork(work_kind="greet", step_id="greet-9"))
    with pytest.raises(EngineError, match="is WAITING"):
        engine.request_work(state, RequestWork(work_kind="greet", step_id="greet-1"))
    done = engine.apply_reply(state, reply(ReplyStatus.OK))
    with pytest.raises(EngineError, match="is DONE"):
        engine.request_work(done, RequestWork(work_kind="greet", step_id="greet-1"))
    failed = engine.apply_reply(state, reply(ReplyStatus.FAIL))
    with pytest.raises(EngineError, match="not 'plan'"):
        engine.request_work(failed, RequestWork(work_kind="plan", step_id="greet-1"))


def test_empty_work_kind_or_key_is_an_error() -> None:
    with pytest.raises(EngineError, match="workKind"):
        engine.request_work(engine.new_state(GOAL), RequestWork(work_kind=""))
    with pytest.raises(EngineError, match="key"):
        engine.annotate(engine.new_state(GOAL), Annotate(key="", value=1))


def test_finalize_while_a_step_runs_is_an_error() -> None:
    with pytest.raises(EngineError, match=r"still running"):
        engine.finalize(waiting())


def test_nothing_changes_a_finished_goal() -> None:
    done = engine.finalize(engine.new_state(GOAL))
    for change in (
        lambda: engine.request_work(done, RequestWork(work_kind="greet")),
        lambda: engine.annotate(done, Annotate(key="k", value=1)),
        lambda: engine.finalize(done),
        lambda: engine.stop(done, GoalStatus.CANCELLED, "late"),
        lambda: engine.apply_reply(done, reply(ReplyStatus.OK)),
    ):
        with pytest.raises(EngineError, match="is COMPLETED"):
            change()


def test_stop_cannot_complete_or_keep_running() -> None:
    for status in (GoalStatus.COMPLETED, GoalStatus.RUNNING):
        with pytest.raises(EngineError, match="not"):
            engine.stop(waiting(), status, "no")


def test_unknown_decision_is_an_error() -> None:
    with pytest.raises(EngineError, match="unknown decision"):
        engine.apply_decision(engine.new_state(GOAL), "REQUEST_WORK")  # type: ignore[arg-type]
