"""The coordinator workflows with in-process workers: hello, multi-step, steering (pause,
resume, cancel, instructions), refusal of keys, retries, continue-as-new, deadlines."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from shopfloor.killswitch import switch_off, switch_on
from shopfloor.kinds.agents.models import (
    AddInstruction,
    CoordinatorState,
    GoalStatus,
    StepStatus,
)
from shopfloor.progress import WorkflowProgress
from shopfloor.settings import Settings
from tests.agents.support import SEED_CONFIG, agent_worker


async def state_of(handle: WorkflowHandle) -> CoordinatorState:
    return await handle.query("state", result_type=CoordinatorState)


async def until(predicate, *, timeout_s: float = 20.0) -> None:  # noqa: ANN001
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout_s)


async def test_hello_workflow_with_the_seed_config(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(SEED_CONFIG, workflow="helloWorkflow")
        result = await handle.result()
    assert result.status is GoalStatus.COMPLETED
    assert result.annotations == {"greeting": "Hello, world!"}
    assert [s.id for s in result.steps] == ["greet-1"]
    assert result.usage.calls == 1 and result.iterations == 1
    stored = json.loads(w.artifacts.read_bytes(result.artifacts["greeting"]))
    assert stored == "Hello, world!"
    assert result.artifacts["greeting"] == (
        f"artifact://{handle.id}/my-goal-123/artifacts/greeting.json"
    )
    final = json.loads(w.artifacts.read_bytes(result.artifacts["final-state"]))
    assert final["status"] == "COMPLETED" and "greet-1" in final["steps"]


async def test_multi_step_plan_work_review(env: WorkflowEnvironment, tmp_path: Path) -> None:
    config = {
        "goalId": "haiku",
        "specConfig": {"task": "write a haiku", "maxSteps": 3},
        "agentType": "mock-agent",
        "agentConfig": {"responses": {"review": "all three parts fit"}},
        "maxIterations": 20,
    }
    async with agent_worker(env.client, tmp_path) as w:
        result = await w.run(config, workflow="multiStepWorkflow")
        calls = [c.step_id for c in w.acts.mock.calls]
    assert result.status is GoalStatus.COMPLETED, result.reason
    assert [s.id for s in result.steps] == ["plan-1", "work-1", "work-2", "work-3", "review-1"]
    assert calls == ["plan-1", "work-1", "work-2", "work-3", "review-1"]
    assert all(s.status is StepStatus.DONE for s in result.steps)
    assert result.annotations["plan"] == [f"part {i} of write a haiku" for i in (1, 2, 3)]
    assert result.annotations["review"] == "all three parts fit"
    assert result.usage.calls == 5 and result.iterations == 5
    assert set(result.artifacts) == {"plan", "results", "review", "final-state"}


async def test_failures_are_retried_by_the_spec_and_recorded(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = {
        **SEED_CONFIG,
        "agentConfig": {
            "failures": [
                {"attempt": 1, "status": "FAIL", "message": "first try fails"},
                {"attempt": 2, "status": "RAISE", "message": "agent crashed"},
            ]
        },
    }
    async with agent_worker(env.client, tmp_path) as w:
        result = await w.run(config)
        attempts = [c.attempt for c in w.acts.mock.calls]
    assert result.status is GoalStatus.COMPLETED
    assert attempts == [1, 2, 3]
    step = result.steps[0]
    assert step.attempt == 3 and step.status is StepStatus.DONE
    assert result.annotations["greeting"] == "Hello, world!"


async def test_agent_exception_becomes_a_provider_error_and_hello_gives_up(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = {**SEED_CONFIG, "agentConfig": {"failures": [{"status": "RAISE", "message": "x"}]}}
    async with agent_worker(env.client, tmp_path) as w:
        result = await w.run(config)
    step = result.steps[0]
    assert step.status is StepStatus.FAILED and step.attempt == 3
    assert step.error is not None and step.error.code == "PROVIDER_ERROR"
    assert "after 3 attempts" in (result.reason or "")


async def test_transient_errors_are_retried_by_temporal_not_the_spec(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = {**SEED_CONFIG, "agentConfig": {"failures": [{"activityAttempts": 1}]}}
    async with agent_worker(env.client, tmp_path) as w:
        result = await w.run(config)
        calls = len(w.acts.mock.calls)
    assert result.status is GoalStatus.COMPLETED
    assert calls == 2 and result.steps[0].attempt == 1  # one step, one engine attempt


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"agentConfig": {"apiKey": "x"}}, "agentConfig may not carry secrets"),
        ({"specType": "nope"}, "unknown specType 'nope'"),
        ({"goalId": "../escape"}, "goalId"),
    ],
)
async def test_bad_config_fails_at_once_without_calling_an_agent(
    env: WorkflowEnvironment, tmp_path: Path, config: dict, message: str
) -> None:
    async with agent_worker(env.client, tmp_path) as w:
        with pytest.raises(WorkflowFailureError) as failed:
            await w.run({**SEED_CONFIG, **config}, workflow="helloWorkflow")
        assert w.acts.mock.calls == []
    assert message in str(failed.value.cause)
    assert "SHOPFLOOR_ANTHROPIC_API_KEY" in str(failed.value.cause) or "Key" not in message


async def test_pause_stops_agent_calls_until_resume(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = {
        "goalId": "pausing",
        "specConfig": {"maxSteps": 4},
        "agentConfig": {"delayMs": 300},
        "maxIterations": 20,
    }
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(config, workflow="multiStepWorkflow")
        await until(lambda: _called(w, 2))
        await handle.signal("pause")
        await until(lambda: _paused_and_idle(handle))
        calls_when_paused = len(w.acts.mock.calls)
        await asyncio.sleep(1.5)  # several call lengths: none may start
        assert len(w.acts.mock.calls) == calls_when_paused
        progress = await handle.query("progress", result_type=WorkflowProgress)
        assert progress.status == "paused"
        await handle.signal("resume")
        result = await handle.result()
    assert result.status is GoalStatus.COMPLETED
    assert len(w.acts.mock.calls) == 6 > calls_when_paused


async def _called(w, n: int) -> bool:  # noqa: ANN001
    return len(w.acts.mock.calls) >= n


async def _paused_and_idle(handle: WorkflowHandle) -> bool:
    s = await state_of(handle)
    return s.paused and s.current_step is None


async def test_cancel_finishes_the_step_in_flight_and_stores_artifacts(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = {
        "goalId": "cancelling",
        "specConfig": {"maxSteps": 5},
        "agentConfig": {"delayMs": 500},
        "maxIterations": 20,
    }
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(config, workflow="multiStepWorkflow")
        await until(lambda: _in_flight(handle, "work-1"))
        await handle.signal("cancel")
        # The step in flight goes on, but the goal takes no more instructions.
        with pytest.raises(WorkflowUpdateFailedError) as late:
            await handle.execute_update(
                "add_instruction", AddInstruction(text="too late"), result_type=dict
            )
        result = await handle.result()
    assert "no longer taken" in str(late.value.cause)
    assert result.status is GoalStatus.CANCELLED and result.reason == "cancel requested"
    work = next(s for s in result.steps if s.id == "work-1")
    assert work.status is StepStatus.DONE  # the call in flight finished and was folded
    assert [s.id for s in result.steps] == ["plan-1", "work-1"]
    assert json.loads(w.artifacts.read_bytes(result.artifacts["plan"]))[0].startswith("part 1")
    final = json.loads(w.artifacts.read_bytes(result.artifacts["final-state"]))
    assert final["status"] == "CANCELLED"


async def _in_flight(handle: WorkflowHandle, step: str) -> bool:
    return (await state_of(handle)).current_step == step


async def test_instruction_reaches_the_next_agent_call(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = {
        "goalId": "steered",
        "specConfig": {"maxSteps": 2},
        "agentConfig": {"delayMs": 300},
        "maxIterations": 20,
    }
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(config, workflow="multiStepWorkflow")
        await until(lambda: _in_flight(handle, "plan-1"))
        added = await handle.execute_update(
            "add_instruction", AddInstruction(text="write in French"), result_type=dict
        )
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("add_instruction", {"text": ""}, result_type=dict)
        result = await handle.result()
        by_step = {c.step_id: c.instructions for c in w.acts.mock.calls}
    assert added["count"] == 1
    assert by_step["plan-1"] == []  # already in flight when the instruction came
    assert by_step["work-1"] == ["write in French"] == by_step["review-1"]
    assert result.status is GoalStatus.COMPLETED


async def test_long_runs_continue_as_new_and_keep_their_state(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    config = {
        "goalId": "long",
        "specConfig": {"maxSteps": 5},
        "maxIterations": 50,
        "iterationsPerRun": 2,
    }
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(config, workflow="multiStepWorkflow")
        await handle.execute_update(
            "add_instruction", AddInstruction(text="keep it"), result_type=dict
        )
        result = await handle.result()
        first_run = await env.client.get_workflow_handle(
            handle.id, run_id=handle.result_run_id
        ).fetch_history()
        last = [c.instructions for c in w.acts.mock.calls][-1]
    assert result.status is GoalStatus.COMPLETED
    assert result.runs == 4 and result.iterations == 7  # plan, 5 work, review: 2 per run
    assert [s.id for s in result.steps][-1] == "review-1" and len(result.steps) == 7
    assert first_run.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
    assert last == ["keep it"]  # instructions survive the hand-over


async def test_deadline_ends_a_paused_run_timed_out_with_artifacts(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    env = time_skipping_env
    config = {**SEED_CONFIG, "deadlineS": 7200, "agentConfig": {"delayMs": 200}}
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(config, start_signal="pause")
        result = await handle.result()
    assert result.status is GoalStatus.TIMED_OUT and "7200" in (result.reason or "")
    assert "final-state" in result.artifacts and w.acts.mock.calls == []


async def test_temporal_cancel_ends_cancelled_with_artifacts(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """`shopfloor cancel` (a Temporal cancel request) ends the goal as the signal does."""
    config = {**SEED_CONFIG, "agentConfig": {"delayMs": 2000}}
    async with agent_worker(env.client, tmp_path) as w:
        handle = await w.start(config)
        await until(lambda: _in_flight(handle, "greet-1"))
        await handle.cancel()
        result = await handle.result()
    assert result.status is GoalStatus.CANCELLED
    assert json.loads(w.artifacts.read_bytes(result.artifacts["final-state"]))["status"] == (
        "CANCELLED"
    )


async def test_kill_switch_refuses_agent_turns(env: WorkflowEnvironment, tmp_path: Path) -> None:
    """With the kill switch on, no agent is called: each turn refuses with the reason."""
    prefix = f"ks-{uuid.uuid4().hex[:8]}-"
    settings = Settings(task_queue_prefix=prefix)
    await switch_on(env.client, "runaway agent", prefix)
    try:
        async with agent_worker(env.client, tmp_path, settings) as w:
            result = await w.run(SEED_CONFIG, workflow="helloWorkflow")
            assert w.acts.mock.calls == []
        assert "kill switch is on" in json.dumps(result.model_dump(mode="json"))
        assert "runaway agent" in json.dumps(result.model_dump(mode="json"))
    finally:
        await switch_off(env.client, "test over", prefix)
    async with agent_worker(env.client, tmp_path, settings) as w:
        result = await w.run(SEED_CONFIG, workflow="helloWorkflow")
    assert result.status is GoalStatus.COMPLETED and len(w.acts.mock.calls) == 1


async def test_the_seeds_key_is_ignored_and_the_result_says_it_is_in_the_history(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Seed 002's config with `agentApiKey: process.env.ANTHROPIC_API_KEY` (set): the goal runs
    on the mock agent as without it; no agent call sees the key; the result warns."""
    key = "sk-ant-seed-" + uuid.uuid4().hex
    async with agent_worker(env.client, tmp_path) as w:
        result = await w.run({**SEED_CONFIG, "agentApiKey": key}, workflow="helloWorkflow")
        calls = w.acts.mock.calls
    assert result.status is GoalStatus.COMPLETED
    assert calls and key not in repr(calls)
    (warning,) = result.warnings
    assert "agentApiKey was ignored" in warning and "now in this workflow's history" in warning
