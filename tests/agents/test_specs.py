"""HelloSpec as seed 002 has it, and the multi-step spec: decisions from state alone."""

from __future__ import annotations

import pytest

from shopfloor.kinds.agents import engine
from shopfloor.kinds.agents.models import (
    AgentReply,
    Annotate,
    EngineState,
    Finalize,
    GoalStatus,
    ReplyStatus,
    RequestWork,
    StepStatus,
)
from shopfloor.kinds.agents.specs import HelloSpec, MultiStepSpec, SpecError, parse_plan, spec_for

GOAL = "g"


def apply(state: EngineState, decisions: list) -> EngineState:
    for d in decisions:
        state = engine.apply_decision(state, d)
    return state


def answer(state: EngineState, status: ReplyStatus, output: str | None = None) -> EngineState:
    for step in engine.runnable_steps(state):
        state = engine.apply_reply(
            state, AgentReply(goal_id=GOAL, step_id=step.id, status=status, output=output)
        )
    return state


def test_hello_spec_requests_a_greeting_then_annotates_and_finalizes() -> None:
    spec = HelloSpec({"workKind": "greet"})
    state = engine.new_state(GOAL)
    first = spec.decide(state)
    assert first == [RequestWork(work_kind="greet", payload={"message": "Say hello"})]
    state = apply(state, first)
    assert spec.decide(state) == []  # the agent is on it
    state = answer(state, ReplyStatus.OK, "Hello, world!")
    last = spec.decide(state)
    assert last == [Annotate(key="greeting", value="Hello, world!"), Finalize()]
    state = apply(state, last)
    assert state.status is GoalStatus.COMPLETED
    assert state.annotations == {"greeting": "Hello, world!"}


@pytest.mark.parametrize(
    "error", [ReplyStatus.FAIL, ReplyStatus.RATE_LIMITED, ReplyStatus.CONTEXT_EXCEEDED]
)
def test_hello_spec_retries_while_attempt_below_three_then_finalizes(error: ReplyStatus) -> None:
    spec = HelloSpec({})
    state = apply(engine.new_state(GOAL), spec.decide(engine.new_state(GOAL)))
    for attempt in (1, 2):
        state = answer(state, error)
        retry = spec.decide(state)
        assert retry == [
            RequestWork(work_kind="greet", payload={"message": "Say hello"}, step_id="greet-1")
        ]
        state = apply(state, retry)
        assert state.steps["greet-1"].attempt == attempt + 1
    state = answer(state, error)
    final = spec.decide(state)
    assert len(final) == 1 and isinstance(final[0], Finalize)
    state = apply(state, final)
    assert state.status is GoalStatus.COMPLETED  # as the seed: finalized all the same
    assert "after 3 attempts" in (state.reason or "")
    assert state.steps["greet-1"].status is not StepStatus.DONE


def test_multi_step_spec_plans_works_in_order_and_reviews() -> None:
    spec = MultiStepSpec({"task": "write a haiku", "maxSteps": 2})
    state = engine.new_state(GOAL)
    kinds_asked: list[str] = []
    outputs = {
        "plan": "1. pick a season\n2. write three lines\n3. extra",
        "work": "ok",
        "review": "looks good",
    }
    for _ in range(10):
        decisions = spec.decide(state)
        state = apply(state, decisions)
        if state.status is not GoalStatus.RUNNING:
            break
        runnable = engine.runnable_steps(state)
        assert len(runnable) == 1
        kinds_asked.append(runnable[0].work_kind)
        state = answer(state, ReplyStatus.OK, outputs[runnable[0].work_kind])
    assert kinds_asked == ["plan", "work", "work", "review"]
    assert state.status is GoalStatus.COMPLETED
    assert state.annotations["plan"] == ["pick a season", "write three lines"]  # maxSteps cut
    assert state.annotations["review"] == "looks good"
    assert list(state.annotations["results"]) == ["work-1", "work-2"]
    second = state.steps["work-2"].payload
    assert second["item"] == "write three lines" and second["index"] == 2
    assert second["previous"] == "ok"  # each step sees the previous one's output
    assert state.steps["review-1"].payload["results"] == ["ok", "ok"]


def test_multi_step_spec_gives_up_with_failed_after_three_attempts() -> None:
    spec = MultiStepSpec({})
    state = apply(engine.new_state(GOAL), spec.decide(engine.new_state(GOAL)))
    for _ in range(2):
        state = answer(state, ReplyStatus.FAIL)
        state = apply(state, spec.decide(state))
    state = answer(state, ReplyStatus.FAIL)
    state = apply(state, spec.decide(state))
    assert state.status is GoalStatus.FAILED and "plan-1 failed after 3" in (state.reason or "")


def test_parse_plan_reads_json_and_list_lines() -> None:
    assert parse_plan('["a", " b ", ""]', 5) == ["a", "b"]
    assert parse_plan("Plan:\n1. one\n2) two\n- three\n* four\nStep 5: five", 10) == [
        "one",
        "two",
        "three",
        "four",
        "five",
    ]
    assert parse_plan("no list here", 3) == []


def test_unknown_spec_and_bad_config_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="unknown specType 'nope'"):
        spec_for("nope", {})
    with pytest.raises(SpecError, match="maxSteps"):
        spec_for("multi-step", {"maxSteps": 0})
    with pytest.raises(SpecError, match="maxSteps"):
        spec_for("multi-step", {"maxSteps": "many"})
    assert isinstance(spec_for("hello", {}), HelloSpec)
